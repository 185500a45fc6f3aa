# kubectl-record: the bash hook. `kubectl record init bash` prints __KR_PYTHON, shell/record.bash and
# this file; `eval "$(kubectl record init bash)"` in ~/.bashrc loads them.
#
# Mechanism ("bash:function"): a shell function named `kubectl`. Every kubectl invocation the shell
# makes goes through it -- typed, through an alias or another function, in pipelines, chains,
# loops, $(...) and subshells -- with its arguments already expanded. Nothing runs for other
# commands: no DEBUG trap, no PROMPT_COMMAND entry, nothing per prompt.
#
# Each run happens in one subshell ( ... ), so that nothing the recording does can touch the
# interactive shell: not $?, PIPESTATUS, $!, $_, traps, options (set -u, IFS, nullglob, ...), the
# job table or the history. The subshell
#   - writes the start section to the spool (builtins only; see record.bash),
#   - runs `command kubectl` with KUBECTL_RECORD_ACTIVE set to its own pid (a recording shim on
#     PATH then just execs the real kubectl: one run, one record, source=hook),
#   - traps SIGINT so that a Ctrl-C that kills kubectl does not abort the recording; it appends
#     the end section (kubectl's status and the time it ended), starts the ingester in the
#     background (no job-control message, the user's $! is untouched) and then, if kubectl died
#     of that Ctrl-C, dies of SIGINT itself: the interactive shell sees what it would have seen
#     without the hook (the loop or the && chain stops, $? is 130, one newline is printed).
# Cost per kubectl run: ~0.2 ms of builtins (spool writes) and the subshell's fork and exit,
# which cost more than its code: forking kubectl from it write-protects its pages, so even its
# last few commands fault them back in (perf: ~150 page faults, ~0.9 ms CPU a run, over bare
# kubectl). The background ingester is started only when none is named in the spool. About
# +1.3 ms a run on a quiet 2-core machine (bench/bench_hooks.py).
# Per prompt and per other command: nothing.
# A kubectl stopped with Ctrl-Z stops with its subshell; `fg` resumes both and the end section is
# written when kubectl really ends.
#
# Limits (documented in the README):
#   - A command that names the binary (/usr/bin/kubectl, `command kubectl`, `\kubectl` in zsh,
#     an alias `kubectl=kubecolor`) bypasses the function; a shim (`kubectl record shim install`)
#     records those.
#   - A `kubectl` function defined before the hook loads is wrapped (renamed __kr_user_kubectl and
#     called in place of the binary, in the subshell: it cannot change the shell's variables any
#     more). One defined after the hook loads replaces the hook for kubectl.
#   - What the user hides on purpose: with KUBECTL_RECORD_DISABLE=1 in the environment nothing is
#     recorded; `KUBECTL_RECORD_DISABLE=1 kubectl ...` hides one run; runs matching the patterns
#     in KUBECTL_RECORD_IGNORE (setting record.ignore) are not recorded. A leading space
#     (HISTCONTROL ignorespace) does not hide a run in bash: the function cannot see how the line
#     was typed, and HISTCMD stays put for every line bash does not save (ignoredups, HISTIGNORE
#     too), so it cannot tell a hidden line from a repeated one. (zsh can: see hook.zsh.)
#   - bash 4.4: timestamps have whole-second resolution (no EPOCHREALTIME before bash 5.0).
#     bash < 4.4 (macOS /bin/bash 3.2): the function hands each run to `kubectl record --` (the
#     Python wrapper, source=wrapper, ~0.1-0.2 s per kubectl run); prompts are still untouched.

if [[ -z ${BASH_VERSION-} ]]; then
    :
elif ((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 4))); then

__kr_hook_run() {
    # Runs in the subshell that `kubectl` opens. Options and traps set here die with it.
    set +euCf +o pipefail
    shopt -u nullglob failglob nocasematch 2>/dev/null
    IFS=$' \t\n'
    trap - DEBUG RETURN ERR
    local __kr_rc __kr_intr= __kr_real=${BASH_CMDS[kubectl]-} __kr_d
    if [[ -z $__kr_real ]]; then
        # The kubectl that `command kubectl` runs, for the record: a few stats.
        set -f
        IFS=:
        for __kr_d in $PATH; do
            [[ -f ${__kr_d:-.}/kubectl && -x ${__kr_d:-.}/kubectl ]] && { __kr_real=${__kr_d:-.}/kubectl; break; }
        done
        IFS=$' \t\n'
        set +f
    fi
    if ((BASH_VERSINFO[0] < 5)); then
        local EPOCHREALTIME
        printf -v EPOCHREALTIME '%(%s)T.000000' -1
    fi
    # Exact mode (audit correlation): the real kubectl, not a shim, started with the record id
    # in argv[0] so that it reaches every request's User-Agent (see __kr_run in record.bash).
    local __kr_mk=
    if [[ ${KUBECTL_RECORD_AUDIT_MARKER-} == 1 && -z ${__kr_wrapped-} ]] && __kr_marker_ok "$@" &&
        __kr_find_kubectl; then
        __kr_mk=1
    fi
    __kr_file=
    __kr_ignored "$@" || __kr_begin hook "$@"
    local __kr_f=$__kr_file
    trap '__kr_intr=1' INT
    if [[ -n $__kr_mk && -n $__kr_f ]]; then
        (exec -a "kubectl+r.$__kr_id" "$__kr_real" "$@")
    elif [[ -n ${__kr_wrapped-} ]]; then
        KUBECTL_RECORD_ACTIVE=$BASHPID __kr_user_kubectl "$@"
    else
        KUBECTL_RECORD_ACTIVE=$BASHPID command kubectl "$@"
    fi
    __kr_rc=$?
    if [[ -n $__kr_f ]]; then
        ((BASH_VERSINFO[0] < 5)) && printf -v EPOCHREALTIME '%(%s)T.000000' -1
        __kr_file=$__kr_f
        __kr_end "$__kr_rc"
        __kr_ingest
    fi
    if [[ -n $__kr_intr ]] && ((__kr_rc == 130)); then
        # kubectl died of the user's Ctrl-C: die of it too, as bare kubectl would have. A
        # subshell of an interactive bash may turn its own SIGINT into a plain exit status 130
        # (which does not stop a loop); a process that really dies of the signal does.
        trap - INT
        exec /bin/sh -c 'kill -INT $$'
    fi
    exit "$__kr_rc"
}

__kr_hook_install() {
    local def
    # A kubectl function that is not ours: keep it, and call it in place of the binary.
    if declare -F kubectl >/dev/null; then
        def=$(declare -f kubectl)
        if [[ $def != *__kr_hook_run* ]]; then
            eval "__kr_user_${def}"
            __kr_wrapped=1
        fi
    fi
    function kubectl {
        if [[ ${1-} == record || ${1-} == __complete* || ${KUBECTL_RECORD_DISABLE-} == 1 ]]; then
            # `kubectl record ...` is recorded by the wrapper itself, as the inner command;
            # `kubectl __complete ...` is tab completion asking, not the user running kubectl.
            if [[ -n ${__kr_wrapped-} ]]; then __kr_user_kubectl "$@"; else command kubectl "$@"; fi
        else
            # Part of a list, so that a run that dies of Ctrl-C stops a caller's loop: bash
            # resets the loop level inside functions and only breaks out of lists then.
            (__kr_hook_run "$@"); return
        fi
    }
    __kr_parent=bash
    if [[ ${__kr_spid-} != "$$" || -z ${KUBECTL_RECORD_SESSION-} ]]; then
        # A new shell (a child shell inherits the variable but not __kr_spid): a new session.
        __kr_spid=$$
        local t=${EPOCHREALTIME-}
        [[ -n $t ]] || printf -v t '%(%s)T' -1
        export KUBECTL_RECORD_SESSION="bash-${t/[.,]/}-$$"
        __kr_tty=$(tty 2>/dev/null) || __kr_tty=
    fi
    export KUBECTL_RECORD_HOOK="bash:function:$$"
}
__kr_hook_install
unset -f __kr_hook_install

else
    # bash < 4.4: record.bash needs mapfile, BASHPID, `printf %()T`; the Python wrapper records.
    __kr_hook_compat() {
        if declare -F kubectl >/dev/null; then
            return 0
        fi
        eval 'function kubectl {
            if [[ ${1-} == record || ${KUBECTL_RECORD_DISABLE-} == 1 ]]; then
                command kubectl "$@"
            else
                command kubectl record -- "$@"
            fi
        }'
        __kr_spid=$$
        export KUBECTL_RECORD_SESSION="bash-${SECONDS}-$$"
        export KUBECTL_RECORD_HOOK="bash:wrapper:$$"
    }
    __kr_hook_compat
    unset -f __kr_hook_compat
fi
