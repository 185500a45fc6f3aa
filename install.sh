#!/usr/bin/env bash
# Install kubectl-record for the current user. No root needed; running it again is harmless.
#
#   ./install.sh                 install (or upgrade) from this checkout
#   ./install.sh --rc            also add the shell hook line to ~/.bashrc / ~/.zshrc (asked on a TTY)
#   ./install.sh --no-rc         never touch rc files
#   ./install.sh --dev           editable install with the test dependencies (for working on it)
#   ./install.sh --uninstall     remove everything it installed, rc lines included; keeps records
#   ./install.sh --uninstall --purge   ... and delete the records and settings too
#
# Where: the program goes to $KUBECTL_RECORD_PREFIX (default ~/.local/share/kubectl-record-app),
# the two commands kubectl needs (kubectl-record, kubectl_complete-record) to $KUBECTL_RECORD_BIN
# (default ~/.local/bin). Records live under KUBECTL_RECORD_HOME (default ~/.local/share/kubectl-record).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
prefix=${KUBECTL_RECORD_PREFIX:-$data_home/kubectl-record-app}
bindir=${KUBECTL_RECORD_BIN:-$HOME/.local/bin}
rc_marker='# kubectl-record shell hook'
mode=install rc=ask dev=0 purge=0

for arg in "$@"; do
    case $arg in
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    --rc) rc=yes ;;
    --no-rc) rc=no ;;
    --dev) dev=1 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'kubectl-record: %s\n' "$*"; }

rc_files() {
    local f
    for f in "$HOME/.bashrc" "${ZDOTDIR:-$HOME}/.zshrc"; do
        printf '%s\n' "$f"
    done
}

remove_rc_lines() {
    local f
    while read -r f; do
        [[ -f $f ]] && grep -qF "$rc_marker" "$f" || continue
        # grep -v fails when nothing is left, which is fine: the file becomes empty.
        grep -vF "$rc_marker" "$f" >"$f.kubectl-record.tmp" || true
        cat "$f.kubectl-record.tmp" >"$f"
        rm -f "$f.kubectl-record.tmp"
        say "removed the hook line from $f"
    done < <(rc_files)
}

if [[ $mode == uninstall ]]; then
    for cmd in kubectl-record kubectl_complete-record; do
        # Only what we wrote: our launchers say so on their second line.
        if [[ -f $bindir/$cmd ]] && sed -n 2p "$bindir/$cmd" | grep -q 'kubectl-record'; then
            rm -f "$bindir/$cmd" && say "removed $bindir/$cmd"
        fi
    done
    remove_rc_lines
    state=${KUBECTL_RECORD_HOME:-$data_home/kubectl-record}
    if [[ -f $state/shim/.kubectl-record-shim ]]; then
        rm -rf "$state/shim" && say "removed the shim directory $state/shim (take it off PATH)"
    fi
    rm -rf "$prefix" && say "removed $prefix"
    if [[ $purge == 1 ]]; then
        rm -rf "$state" "${XDG_CONFIG_HOME:-$HOME/.config}/kubectl-record"
        rm -rf "${XDG_RUNTIME_DIR:-/nonexistent}/kubectl-record" "/dev/shm/kubectl-record-$(id -u)"
        say "removed records, settings and spool"
    else
        say "kept your records in $state (--purge removes them)"
    fi
    exit 0
fi

python=${PYTHON:-}
if [[ -z $python ]]; then
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
            python=$(command -v "$candidate")
            break
        fi
    done
fi
[[ -n $python ]] || { echo "install.sh: Python 3.9 or newer is needed" >&2; exit 1; }

if [[ ! -x $prefix/bin/python ]]; then
    say "creating $prefix"
    "$python" -m venv "$prefix"
fi
if [[ $dev == 1 ]]; then
    "$prefix/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
else
    "$prefix/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$here"
fi
"$prefix/bin/python" -m kubectl_record setup-launchers --bin "$bindir" | while read -r p; do say "installed $p"; done

case ":$PATH:" in
*":$bindir:"*) ;;
*) say "add $bindir to PATH, e.g. echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.bashrc" ;;
esac

if [[ $rc == ask ]]; then
    rc=no
    if [[ -t 0 && -t 1 ]]; then
        read -r -p "Record every kubectl typed in bash/zsh (adds one line to your rc files)? [y/N] " answer
        [[ $answer == [yY]* ]] && rc=yes
    fi
fi
if [[ $rc == yes ]]; then
    while read -r f; do
        shell=bash
        [[ $f == *zshrc ]] && shell=zsh
        [[ $shell == zsh && ! -f $f ]] && ! command -v zsh >/dev/null && continue
        if [[ -f $f ]] && grep -qF "$rc_marker" "$f"; then
            say "$f already loads the hook"
            continue
        fi
        printf '%s\n' "command -v kubectl-record >/dev/null && eval \"\$(kubectl-record init $shell)\"  $rc_marker" >>"$f"
        say "added the hook line to $f (open a new shell to start recording)"
    done < <(rc_files)
fi
say "done: try 'kubectl record --help' and 'kubectl record doctor'"
