# kubectl-record: the zsh hook. `kubectl record init zsh` prints __KR_PYTHON, shell/record.zsh and
# this file; `eval "$(kubectl record init zsh)"` in ~/.zshrc loads them.
#
# Mechanism ("zsh:function"), as in hook.bash: a function named `kubectl` sees every invocation
# the shell makes (typed, aliases, functions, pipelines, chains, loops, $(...), subshells) with
# expanded arguments; nothing runs for other commands and nothing is added to precmd/preexec.
# Each run happens in one subshell, so nothing can touch the interactive shell ($?, $pipestatus,
# $!, $_, traps, options, jobs, history). In it: start section, `command kubectl` with
# KUBECTL_RECORD_ACTIVE=<its pid> (a shim on PATH then execs the real kubectl: one record,
# source=hook), end section, background ingester (`&!`: no job, no message); a Ctrl-C that
# killed kubectl is trapped long enough to write the end section, then the subshell dies of
# SIGINT so that the shell stops the loop or chain as it would for bare kubectl.
# Hidden on purpose: a line typed with a leading space when HIST_IGNORE_SPACE is set (the lines
# the shell keeps out of its history), runs matching KUBECTL_RECORD_IGNORE (see record.bash),
# and KUBECTL_RECORD_DISABLE=1 for a run or a shell.
# Limits: see hook.bash (bypassing the function, kubectl functions defined after loading).

__kr_hook_run() {
    # Runs in the subshell that `kubectl` opens.
    # A line typed with a leading space under HIST_IGNORE_SPACE is one the user keeps out of the
    # history: it is not recorded either. Read before `emulate` resets the option; the line
    # stays in $history (zsh/parameter) until the next one is entered.
    local __kr_hide=
    [[ -o hist_ignore_space && ${history[$HISTCMD]-} == ' '* ]] && __kr_hide=1
    emulate -L zsh
    setopt no_err_exit no_err_return
    trap - DEBUG ZERR 2>/dev/null
    local __kr_rc __kr_intr= __kr_real= __kr_d
    # The kubectl that `command kubectl` runs. Not $commands[kubectl]: in a subshell that fills
    # zsh's whole command table first (1-2 ms); a few stats do.
    for __kr_d in $path; do
        [[ -f ${__kr_d:-.}/kubectl && -x ${__kr_d:-.}/kubectl ]] && { __kr_real=${__kr_d:-.}/kubectl; break; }
    done
    # Exact mode (audit correlation, as in hook.bash): the real kubectl, not a shim, with the
    # record id in argv[0].
    local __kr_mk=
    if [[ ${KUBECTL_RECORD_AUDIT_MARKER-} == 1 ]] && (( ! ${+functions[__kr_user_kubectl]} )) &&
        __kr_marker_ok "$@" && __kr_find_kubectl; then
        __kr_mk=1
    fi
    __kr_file=
    [[ -n $__kr_hide ]] || __kr_ignored "$@" || __kr_begin hook "$@"
    local __kr_f=$__kr_file
    trap '__kr_intr=1' INT
    if [[ -n $__kr_mk && -n $__kr_f ]]; then
        (exec -a "kubectl+r.$__kr_id" "$__kr_real" "$@")
    elif (( ${+functions[__kr_user_kubectl]} )); then
        KUBECTL_RECORD_ACTIVE=$__kr_mypid __kr_user_kubectl "$@"
    else
        KUBECTL_RECORD_ACTIVE=$__kr_mypid command kubectl "$@"
    fi
    __kr_rc=$?
    if [[ -n $__kr_f ]]; then
        __kr_file=$__kr_f
        __kr_end $__kr_rc
        __kr_ingest
    fi
    if [[ -n $__kr_intr ]] && (( __kr_rc == 130 )); then
        # kubectl died of the user's Ctrl-C: die of it too, as bare kubectl would have. zsh
        # would turn its own SIGINT into a plain exit status 130, which does not stop a loop;
        # a process that really dies of the signal does.
        trap - INT
        exec /bin/sh -c 'kill -INT $$'
    fi
    exit $__kr_rc
}

() {
    emulate -L zsh
    if (( ${+functions[kubectl]} )) && [[ $functions[kubectl] != *__kr_hook_run* ]]; then
        # A kubectl function that is not ours: keep it, and call it in place of the binary.
        functions[__kr_user_kubectl]=$functions[kubectl]
    fi
    function kubectl {
        if [[ ${1-} == record || ${1-} == __complete* || ${KUBECTL_RECORD_DISABLE-} == 1 ]]; then
            # `kubectl record ...` is recorded by the wrapper itself, as the inner command;
            # `kubectl __complete ...` is tab completion asking, not the user running kubectl.
            if (( ${+functions[__kr_user_kubectl]} )); then
                __kr_user_kubectl "$@"
            else
                command kubectl "$@"
            fi
        else
            (__kr_pid; __kr_hook_run "$@")
        fi
    }
    typeset -g __kr_parent=zsh
    if [[ ${__kr_spid-} != $$ || -z ${KUBECTL_RECORD_SESSION-} ]]; then
        typeset -g __kr_spid=$$ __kr_tty=${TTY-}
        __kr_now
        export KUBECTL_RECORD_SESSION="zsh-${__kr_now/./}-$$"
    fi
    export KUBECTL_RECORD_HOOK="zsh:function:$$"
}
