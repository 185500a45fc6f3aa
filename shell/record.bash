# kubectl-record: the recording hot path shared by the shim, the `kubectl-record --` wrapper and
# the bash hook. Builtins only: nothing is started before kubectl, and after it only the
# background ingester (which masks secrets and writes the database). Every variable and function
# here starts with __kr_ so that sourcing it into an interactive shell touches nothing else.
#
# Spool format, version 1 (parsed by kubectl_record/spool.py; keep the two in step and bump the
# version on any change, since an open shell may keep an older copy of this file):
#   one file per run, <spool>/<id>.run, holding NUL-terminated "key=value" tokens;
#   a start section:  v=1 ev=start id=… src=… t=<epoch.us> … argc=N <N argument words> .
#   an end section:   ev=end t=<epoch.us> rc=<status> .
#   Optional start keys (readers ignore keys they do not know): mk=1 when kubectl was started
#   with the exact mode's argv[0] marker (kubectl+r.<id>, KUBECTL_RECORD_AUDIT_MARKER=1).
#   The spool directory is 0700 and memory-backed where the OS has one: it is the only place an
#   unmasked command line may exist, and only until ingestion.

__kr_spool_dir() {
    # Same rule as kubectl_record.paths.spool_dir(); keep them in step.
    local base
    if [[ -n ${KUBECTL_RECORD_RUNTIME_DIR-} ]]; then
        __kr_spool=$KUBECTL_RECORD_RUNTIME_DIR
        return
    elif [[ -n ${XDG_RUNTIME_DIR-} && -d $XDG_RUNTIME_DIR && -O $XDG_RUNTIME_DIR ]]; then
        base=$XDG_RUNTIME_DIR/kubectl-record
    elif [[ -d /dev/shm ]]; then
        base=/dev/shm/kubectl-record-$UID
    else
        base=${TMPDIR:-/tmp}/kubectl-record-$UID
    fi
    if [[ -n ${KUBECTL_RECORD_HOME-} ]]; then
        # One spool per state directory, so a test's or a second profile's ingester never
        # takes runs meant for another database.
        local h=${KUBECTL_RECORD_HOME//%/%25}
        base=$base/h${h//\//%2F}
    fi
    __kr_spool=$base
}

__kr_prepare_spool() {
    __kr_spool_dir
    if [[ ! -d $__kr_spool/kc ]]; then
        (umask 077 && command mkdir -p -- "$__kr_spool/kc") 2>/dev/null || return 1
    fi
    # Never write command lines into a directory someone else owns.
    [[ -O $__kr_spool && -w $__kr_spool ]]
}

__kr_new_id() {
    # UUIDv7: 48 bits of Unix milliseconds, then random bits mixed with the pid so that
    # parallel processes starting in the same millisecond still differ.
    local us=${__kr_t/[.,]/} r=${SRANDOM:-$RANDOM$RANDOM}
    local ms=$((10#$us / 1000))
    printf -v __kr_id '%08x-%04x-7%03x-%04x-%04x%08x' \
        $((ms >> 16)) $((ms & 0xffff)) $((RANDOM & 0xfff)) $(((RANDOM & 0x3fff) | 0x8000)) \
        $RANDOM $(((r ^ (${BASHPID:-$$} << 12)) & 0xffffffff))
}

__kr_snapshot_kubeconfigs() {
    # Copies each kubeconfig in effect into the spool when it changed since the last copy, so the
    # ingester resolves context and namespace as they were when this run started, even after
    # `config use-context` or kubens has rewritten the file. Unchanged files cost one stat each.
    local f key latest i
    local -a files snaps lines
    __kr_snaps=()
    if [[ -n $__kr_kcflag ]]; then
        files=("$__kr_kcflag")
    elif [[ -n ${KUBECONFIG-} ]]; then
        local IFS=:
        files=($KUBECONFIG)
    else
        files=("$HOME/.kube/config")
    fi
    for f in "${files[@]}"; do
        [[ -n $f ]] || continue
        [[ $f == /* ]] || f=$PWD/$f
        [[ -f $f && -r $f ]] || continue
        key=${f//%/%25}
        key=$__kr_spool/kc/${key//\//%2F}
        snaps=("$key".*)
        latest=${snaps[${#snaps[@]}-1]}
        if [[ ! -e $latest || $f -nt $latest ]]; then
            latest=$key.${__kr_t/[.,]/}-${BASHPID:-$$}
            mapfile lines <"$f" 2>/dev/null || continue
            printf '%s' "${lines[@]}" >"$latest" 2>/dev/null || continue
        fi
        __kr_snaps+=("kcf=$f" "kcs=$latest")
    done
}

__kr_is_shim() {
    # Our shims say so on their second line; a copy of one found again must not be run as kubectl.
    local line
    { read -r line && read -r line; } <"$1" 2>/dev/null
    [[ $line == '# kubectl-record shim'* ]]
}

__kr_find_kubectl() {
    # KUBECTL_RECORD_KUBECTL unless it names a shim, else the first kubectl on PATH that is not
    # one of our shims (a directory holding .kubectl-record-shim, or a file that says it is one).
    __kr_real=${KUBECTL_RECORD_KUBECTL-}
    if [[ -n $__kr_real ]] && ! __kr_is_shim "$__kr_real"; then
        return 0
    fi
    local d
    local IFS=:
    for d in $PATH; do
        [[ -n $d ]] || d=.
        [[ -f $d/kubectl && -x $d/kubectl && ! -e $d/.kubectl-record-shim ]] || continue
        __kr_is_shim "$d/kubectl" && continue
        __kr_real=$d/kubectl
        return 0
    done
    return 1
}

__kr_marker_ok() {
    # Exact mode: whether this run may carry the argv[0] marker. The API server derives a default
    # field manager from the user agent for writes that name none (kubectl scale, cordon,
    # uncordon, drain, rollout undo, certificate approve/deny, debug, auth reconcile), which would
    # leave one managedFields entry per run: those commands run unmarked.
    local a skip= cmd= sub=
    for a in "$@"; do
        if [[ -n $skip ]]; then skip=; continue; fi
        case $a in
        --) break ;;
        --*=*) continue ;;
        -n|--namespace|--context|--cluster|--user|--kubeconfig|-s|--server|--as|--as-group|--as-uid|--token|\
        --certificate-authority|--client-certificate|--client-key|--request-timeout|--cache-dir|\
        --tls-server-name|-v|--v|--vmodule|--log-file|--username|--password|--profile|--profile-output)
            skip=1; continue ;;
        -*) continue ;;
        esac
        if [[ -z $cmd ]]; then cmd=$a; else sub=$a; break; fi
    done
    case $cmd in
    scale|cordon|uncordon|drain|debug|certificate) return 1 ;;
    rollout) [[ $sub != undo ]] ;;
    auth) [[ $sub != reconcile ]] ;;
    apply) [[ $sub != edit-last-applied && $sub != set-last-applied ]] ;;
    *) return 0 ;;
    esac
}

__kr_ignored() {
    # Whether the user hides this run on purpose: KUBECTL_RECORD_IGNORE (setting record.ignore,
    # baked in by init and shim install) holds glob patterns separated by |, each matched against
    # the arguments joined by single spaces ('get secret*|config view --raw*').
    [[ -n ${KUBECTL_RECORD_IGNORE-} ]] || return 1
    local IFS=' ' rest=$KUBECTL_RECORD_IGNORE pat
    local line="$*"
    while :; do
        pat=${rest%%|*}
        [[ -n $pat && $line == $pat ]] && return 0
        [[ $rest == *'|'* ]] || return 1
        rest=${rest#*|}
    done
}

__kr_begin() {
    # Writes the start section of a run. $1 is the source (shim, wrapper, hook), the rest are
    # kubectl's arguments. Sets __kr_file (empty when nothing could be written) and __kr_id.
    local src=$1 a pcomm=${__kr_parent-} v
    shift
    __kr_file=
    __kr_prepare_spool || return 0
    __kr_t=$EPOCHREALTIME
    __kr_new_id
    __kr_kcflag=
    for a in "$@"; do
        # The one flag that changes which files are read; everything else is parsed later.
        case $a in
        --kubeconfig=*) __kr_kcflag=${a#--kubeconfig=} ;;
        --) break ;;
        esac
        [[ $v == 1 ]] && { __kr_kcflag=$a; v=; }
        [[ $a == --kubeconfig ]] && v=1
    done
    __kr_snapshot_kubeconfigs
    if [[ -z $pcomm && -r /proc/$PPID/comm ]]; then
        read -r pcomm </proc/$PPID/comm
    fi
    local -a ci=()
    if [[ -n ${CI-}${GITHUB_ACTIONS-}${GITLAB_CI-}${JENKINS_URL-}${BUILDKITE-}${CIRCLECI-}${TF_BUILD-}${TEAMCITY_VERSION-}${BITBUCKET_BUILD_NUMBER-} ]]; then
        for v in CI GITHUB_ACTIONS GITHUB_REPOSITORY GITHUB_WORKFLOW GITHUB_JOB GITHUB_RUN_ID GITHUB_SHA \
            GITLAB_CI CI_PROJECT_PATH CI_JOB_NAME CI_JOB_ID CI_COMMIT_SHA \
            JENKINS_URL JOB_NAME BUILD_NUMBER GIT_COMMIT BUILDKITE BUILDKITE_PIPELINE_SLUG BUILDKITE_JOB_ID BUILDKITE_COMMIT \
            CIRCLECI CIRCLE_PROJECT_REPONAME CIRCLE_JOB CIRCLE_BUILD_NUM CIRCLE_SHA1 \
            TF_BUILD BUILD_DEFINITIONNAME BUILD_BUILDID BUILD_SOURCEVERSION TEAMCITY_VERSION BITBUCKET_BUILD_NUMBER BITBUCKET_COMMIT; do
            [[ -n ${!v-} ]] && ci+=("ci.$v=${!v}")
        done
    fi
    __kr_file=$__kr_spool/$__kr_id.run
    printf '%s\0' v=1 ev=start "id=$__kr_id" "src=$src" "t=$__kr_t" "pid=${BASHPID:-$$}" \
        "ppid=$PPID" "pcomm=$pcomm" "spid=${__kr_spid-}" "sess=${KUBECTL_RECORD_SESSION-}" \
        "cwd=$PWD" "uid=$UID" "home=$HOME" "kcset=${KUBECONFIG+1}" "kcenv=${KUBECONFIG-}" \
        "kubectl=${__kr_real-}" "ssh=${SSH_CLIENT-}" "sudo=${SUDO_USER-}" "tty=${__kr_tty-}" ${__kr_mk:+mk=1} \
        "${__kr_snaps[@]}" "${ci[@]}" "argc=$#" "$@" . >"$__kr_file" 2>/dev/null || __kr_file=
    return 0
}

__kr_end() {
    # Appends the end section: $1 is kubectl's exit status as the shell reports it.
    [[ -n $__kr_file ]] || return 0
    printf '%s\0' ev=end "t=$EPOCHREALTIME" "rc=$1" . >>"$__kr_file" 2>/dev/null
    __kr_file=
}

__kr_ingest() {
    # Starts the ingester in the background, detached from the terminal; it masks and stores
    # what is spooled. It never delays kubectl: this runs after kubectl has ended.
    [[ -n ${__KR_PYTHON-} ]] || return 0
    # A live ingester looks at the spool once more after it lets go (kubectl_record/ingest.py).
    local pid
    if read -r pid 2>/dev/null <"$__kr_spool/.ingester" && kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    "$__KR_PYTHON" -I -m kubectl_record.ingest --background </dev/null >/dev/null 2>&1 &
    # Named at once (Python takes tens of milliseconds to name itself), so that the runs of a
    # fast loop leave their work to this one instead of starting one Python each.
    printf '%s\n' "$!" >|"$__kr_spool/.ingester" 2>/dev/null
}

__kr_run() {
    # The shim and the wrapper: record, run the real kubectl as a child that keeps stdin, the
    # terminal and the default signal dispositions, pass signals on, and leave with its status.
    local src=$1 child rc sig
    shift
    if ! __kr_find_kubectl; then
        printf 'kubectl-record: no kubectl found on PATH (set KUBECTL_RECORD_KUBECTL)\n' >&2
        exit 127
    fi
    # Off switch; a recorder that started us directly (the bash/zsh hook, whose own record covers
    # this run); `kubectl record …`, whose wrapper records the inner command itself; a run the
    # user hides.
    if [[ ${KUBECTL_RECORD_DISABLE-} == 1 || ${KUBECTL_RECORD_ACTIVE-} == "$PPID" || ${1-} == record ]] ||
        __kr_ignored "$@"; then
        unset KUBECTL_RECORD_ACTIVE
        exec "$__kr_real" "$@"
    fi
    __kr_mk=
    [[ ${KUBECTL_RECORD_AUDIT_MARKER-} == 1 ]] && __kr_marker_ok "$@" && __kr_mk=1
    __kr_begin "$src" "$@"
    [[ -n $__kr_file ]] || __kr_mk=
    # An asynchronous child of a non-interactive shell would start with SIGINT/SIGQUIT ignored
    # and stdin on /dev/null; the subshell restores both before exec. It stays in our process
    # group, so the terminal (exec -it, edit) and Ctrl-C reach it as they would bare kubectl.
    (
        trap - INT QUIT TERM HUP USR1 USR2
        # Exact mode: the record id in argv[0] reaches every request's User-Agent.
        [[ -n $__kr_mk ]] && exec -a "kubectl+r.$__kr_id" "$__kr_real" "$@"
        exec "$__kr_real" "$@"
    ) <&0 &
    child=$!
    for sig in INT TERM HUP QUIT USR1 USR2; do
        trap "kill -$sig $child 2>/dev/null" "$sig"
    done
    while :; do
        wait "$child"
        rc=$?
        # wait returns early (>128) when a trapped signal arrives; the child may still run.
        ((rc > 128)) && kill -0 "$child" 2>/dev/null && continue
        break
    done
    trap - INT TERM HUP QUIT USR1 USR2
    __kr_end "$rc"
    __kr_ingest
    if ((rc > 128 && rc < 160)); then
        # kubectl was killed by a signal: die of the same one so that our caller sees what it
        # would have seen (a shell loop stops on Ctrl-C), without a core file of our own.
        ulimit -c 0 2>/dev/null
        trap - $((rc - 128))
        kill -s $((rc - 128)) $$ 2>/dev/null
    fi
    exit "$rc"
}
