# kubectl-record: the recording hot path for the zsh hook -- the zsh counterpart of the parts of
# shell/record.bash that the hook needs (__kr_spool_dir, __kr_prepare_spool, __kr_new_id,
# __kr_snapshot_kubeconfigs, __kr_is_shim, __kr_find_kubectl, __kr_marker_ok, __kr_ignored,
# __kr_begin, __kr_end, __kr_ingest). Same spool format, version 1:
# see record.bash and kubectl_record/spool.py, and change the three together.
#
# Builtins and zsh modules only (zsh/datetime for the time, zsh/system for the pid of a
# subshell): nothing is started before kubectl. Every function starts with `emulate -L zsh`, so
# the user's options (KSH_ARRAYS, SH_WORD_SPLIT, NO_UNSET, NULL_GLOB, ...) cannot change what it
# does, and every name here starts with __kr_.

zmodload -F zsh/datetime p:epochtime 2>/dev/null
zmodload -F zsh/system p:sysparams 2>/dev/null

__kr_spool_dir() {
    # Same rule as kubectl_record.paths.spool_dir(); keep them in step.
    emulate -L zsh
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
        local h=${KUBECTL_RECORD_HOME//\%/%25}
        base=$base/h${h//\//%2F}
    fi
    __kr_spool=$base
}

__kr_prepare_spool() {
    emulate -L zsh
    __kr_spool_dir
    if [[ ! -d $__kr_spool/kc ]]; then
        (umask 077 && command mkdir -p -- "$__kr_spool/kc") 2>/dev/null || return 1
    fi
    [[ -O $__kr_spool && -w $__kr_spool ]]
}

__kr_now() {
    # Seconds since the epoch with microseconds, as the format wants: EPOCHREALTIME is a float
    # printed with a varying number of decimals; epochtime is (seconds nanoseconds), read once.
    local -a e
    e=($epochtime)
    __kr_ns=$e[2]
    printf -v __kr_now '%d.%06d' $e[1] $(( e[2] / 1000 ))
}

__kr_pid() {
    # The pid of the (sub)shell running this: $$ stays the parent's in a zsh subshell.
    __kr_mypid=${sysparams[pid]:-$$}
}

__kr_new_id() {
    # UUIDv7, as in record.bash: 48 bits of Unix milliseconds, then random bits. A zsh subshell
    # inherits its parent's RANDOM state (every subshell draws the same numbers), so the
    # nanoseconds and the pid are mixed in.
    emulate -L zsh
    local us=${__kr_t/[.,]/}
    local -i ms=$(( 10#$us / 1000 )) ns=${__kr_ns:-0}
    local -i r=$(( (RANDOM << 17) ^ (RANDOM << 2) ^ RANDOM ^ (__kr_mypid << 12) ^ ns ))
    printf -v __kr_id '%08x-%04x-7%03x-%04x-%04x%08x' \
        $(( ms >> 16 )) $(( ms & 0xffff )) $(( (RANDOM ^ ns) & 0xfff )) \
        $(( ((RANDOM ^ (ns >> 12)) & 0x3fff) | 0x8000 )) $(( (RANDOM ^ __kr_mypid) & 0xffff )) \
        $(( r & 0xffffffff ))
}

__kr_snapshot_kubeconfigs() {
    # As in record.bash: copy each kubeconfig in effect into the spool when it changed since the
    # last copy; an unchanged file costs one glob and one stat.
    emulate -L zsh
    local f key latest content
    local -a files snaps
    __kr_snaps=()
    if [[ -n $__kr_kcflag ]]; then
        files=("$__kr_kcflag")
    elif [[ -n ${KUBECONFIG-} ]]; then
        files=("${(@s.:.)KUBECONFIG}")
    else
        files=("$HOME/.kube/config")
    fi
    for f in "${files[@]}"; do
        [[ -n $f ]] || continue
        [[ $f == /* ]] || f=$PWD/$f
        [[ -f $f && -r $f ]] || continue
        key=${f//\%/%25}
        key=$__kr_spool/kc/${key//\//%2F}
        snaps=("$key".*(N))
        latest=${snaps[-1]-}
        if [[ -z $latest || $f -nt $latest ]]; then
            latest=$key.${__kr_t/[.,]/}-$__kr_mypid
            # $(<file) is read by the shell itself, without a fork.
            content="$(<"$f")" 2>/dev/null || continue
            print -rn -- "$content"$'\n' >|"$latest" 2>/dev/null || continue
        fi
        __kr_snaps+=("kcf=$f" "kcs=$latest")
    done
}

__kr_is_shim() {
    # As in record.bash: our shims say so on their second line.
    emulate -L zsh
    local line
    { read -r line && read -r line } <"$1" 2>/dev/null
    [[ $line == '# kubectl-record shim'* ]]
}

__kr_find_kubectl() {
    # As in record.bash: KUBECTL_RECORD_KUBECTL, else the first kubectl on PATH that is not one
    # of our shims. Sets __kr_real.
    emulate -L zsh
    __kr_real=${KUBECTL_RECORD_KUBECTL-}
    if [[ -n $__kr_real ]]; then
        __kr_is_shim "$__kr_real" && __kr_real=
        [[ -n $__kr_real ]]
        return
    fi
    local d
    for d in $path; do
        [[ -n $d ]] || d=.
        [[ -f $d/kubectl && -x $d/kubectl && ! -e $d/.kubectl-record-shim ]] || continue
        __kr_is_shim "$d/kubectl" && continue
        __kr_real=$d/kubectl
        return 0
    done
    return 1
}

__kr_marker_ok() {
    # As in record.bash (exact mode): whether this run may carry the argv[0] marker; commands
    # whose writes would get a field manager derived from the user agent run unmarked.
    emulate -L zsh
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
    # As in record.bash: KUBECTL_RECORD_IGNORE holds glob patterns separated by |, each matched
    # against the arguments joined by single spaces.
    emulate -L zsh
    [[ -n ${KUBECTL_RECORD_IGNORE-} ]] || return 1
    local line=${(j: :)@} pat
    for pat in "${(@s:|:)KUBECTL_RECORD_IGNORE}"; do
        [[ -n $pat && $line == $~pat ]] && return 0
    done
    return 1
}

__kr_begin() {
    # Writes the start section of a run: $1 is the source, the rest kubectl's arguments. Sets
    # __kr_file (empty when nothing could be written) and __kr_id.
    emulate -L zsh
    local src=$1 a pcomm=${__kr_parent-} v= name
    shift
    __kr_file=
    __kr_prepare_spool || return 0
    __kr_pid
    __kr_now
    __kr_t=$__kr_now
    __kr_new_id
    __kr_kcflag=
    for a in "$@"; do
        case $a in
        --kubeconfig=*) __kr_kcflag=${a#--kubeconfig=} ;;
        --) break ;;
        esac
        [[ $v == 1 ]] && { __kr_kcflag=$a; v=; }
        [[ $a == --kubeconfig ]] && v=1
    done
    __kr_snapshot_kubeconfigs
    local -a ci=()
    if [[ -n ${CI-}${GITHUB_ACTIONS-}${GITLAB_CI-}${JENKINS_URL-}${BUILDKITE-}${CIRCLECI-}${TF_BUILD-}${TEAMCITY_VERSION-}${BITBUCKET_BUILD_NUMBER-} ]]; then
        for name in CI GITHUB_ACTIONS GITHUB_REPOSITORY GITHUB_WORKFLOW GITHUB_JOB GITHUB_RUN_ID GITHUB_SHA \
            GITLAB_CI CI_PROJECT_PATH CI_JOB_NAME CI_JOB_ID CI_COMMIT_SHA \
            JENKINS_URL JOB_NAME BUILD_NUMBER GIT_COMMIT BUILDKITE BUILDKITE_PIPELINE_SLUG BUILDKITE_JOB_ID BUILDKITE_COMMIT \
            CIRCLECI CIRCLE_PROJECT_REPONAME CIRCLE_JOB CIRCLE_BUILD_NUM CIRCLE_SHA1 \
            TF_BUILD BUILD_DEFINITIONNAME BUILD_BUILDID BUILD_SOURCEVERSION TEAMCITY_VERSION BITBUCKET_BUILD_NUMBER BITBUCKET_COMMIT; do
            [[ -n ${(P)name-} ]] && ci+=("ci.$name=${(P)name}")
        done
    fi
    __kr_file=$__kr_spool/$__kr_id.run
    print -rN -- v=1 ev=start "id=$__kr_id" "src=$src" "t=$__kr_t" "pid=$__kr_mypid" \
        "ppid=$PPID" "pcomm=$pcomm" "spid=${__kr_spid-}" "sess=${KUBECTL_RECORD_SESSION-}" \
        "cwd=$PWD" "uid=$UID" "home=$HOME" "kcset=${KUBECONFIG+1}" "kcenv=${KUBECONFIG-}" \
        "kubectl=${__kr_real-}" "ssh=${SSH_CLIENT-}" "sudo=${SUDO_USER-}" "tty=${__kr_tty-}" ${__kr_mk:+mk=1} \
        "${__kr_snaps[@]}" "${ci[@]}" "argc=$#" "$@" . >|"$__kr_file" 2>/dev/null || __kr_file=
    return 0
}

__kr_end() {
    # Appends the end section: $1 is kubectl's exit status as the shell reports it.
    emulate -L zsh
    [[ -n $__kr_file ]] || return 0
    __kr_now
    print -rN -- ev=end "t=$__kr_now" "rc=$1" . >>"$__kr_file" 2>/dev/null
    __kr_file=
}

__kr_ingest() {
    # The background ingester, detached from the terminal; `&!` makes it no job of the shell's.
    emulate -L zsh
    [[ -n ${__KR_PYTHON-} ]] || return 0
    # As in record.bash: a live ingester named in the spool takes this run over (without this
    # check every run started a Python that lingered 30 s: dozens of them after a loop).
    local pid
    if { read -r pid <"$__kr_spool/.ingester" } 2>/dev/null && kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    "$__KR_PYTHON" -I -m kubectl_record.ingest --background </dev/null >/dev/null 2>&1 &!
    # Named at once, as in record.bash: the runs of a fast loop leave their work to this one.
    print -r -- $! >|"$__kr_spool/.ingester" 2>/dev/null
}
