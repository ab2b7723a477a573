//! Job names in the shell completion scripts.
//!
//! clap's scripts complete initctl's commands and options, from the one CLI
//! definition; a job name is known only to the running supervisor, so what this
//! adds asks it at completion time, through the hidden `initctl __complete-jobs`
//! (nothing, and no error, when no supervisor answers). It covers the commands
//! that take a job first (start, stop, restart, reload, status, log) and the links
//! to initctl named after the first five.

use clap_complete::Shell;

/// The commands whose first argument is a job's name.
pub const JOB_COMMANDS: &str = "start stop restart reload status log";
/// The links to initctl whose first argument is a job's name.
pub const JOB_LINKS: &str = "start stop restart reload status";

/// initctl's completion script for `shell`: clap's, with job names added.
pub fn script(shell: Shell) -> String {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    let mut clap_script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "initctl", &mut clap_script);
    let clap_script = String::from_utf8_lossy(&clap_script);
    let added = |text: &str| {
        text.replace("@COMMANDS@", JOB_COMMANDS)
            .replace("@LINKS@", JOB_LINKS)
    };
    match shell {
        Shell::Bash => clap_script.into_owned() + &added(BASH),
        Shell::Fish => clap_script.into_owned() + &added(FISH),
        // zsh names the completer in each argument's spec; ours must be defined
        // before clap's function first runs, which an autoloaded `_initctl` file
        // does at its end, yet after the `#compdef` line that must come first.
        Shell::Zsh => {
            let script = clap_script.replace("'::job:_default'", "'::job:_keel_jobs'");
            match script.split_once('\n') {
                Some((compdef, rest)) => format!("{compdef}\n{}{rest}", added(ZSH)),
                None => script,
            }
        }
        _ => clap_script.into_owned(),
    }
}

const BASH: &str = r#"
# keel: job names from the running supervisor.
_initctl_jobs() {
    local invoked=${COMP_WORDS[0]##*/} verb first=1 ctl=${COMP_WORDS[0]} j before=0
    case " @LINKS@ " in
        *" $invoked "*) verb=$invoked first=0 ctl=initctl ;;
    esac
    for ((j = 1; j < COMP_CWORD; j++)); do
        case ${COMP_WORDS[j]} in
            --socket) ((j++)) ;;
            -*) ;;
            *) if [[ -z $verb ]]; then verb=${COMP_WORDS[j]} first=$j; else ((before++)); fi ;;
        esac
    done
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [[ -n $verb && " @COMMANDS@ " == *" $verb "* && $before == 0 && $cur != -* ]]; then
        COMPREPLY=($(compgen -W "$("$ctl" __complete-jobs 2>/dev/null)" -- "$cur"))
        return 0
    fi
    if [[ $first != 0 ]]; then
        _initctl "$@"
    fi
}
complete -F _initctl_jobs -o bashdefault -o default initctl @LINKS@
"#;

const ZSH: &str = r#"
# keel: job names from the running supervisor.
_keel_jobs() {
    local -a jobs
    jobs=(${(f)"$(initctl __complete-jobs 2>/dev/null)"})
    compadd -a jobs
}
_keel_link() {
    (( CURRENT == 2 )) && _keel_jobs
}
compdef _keel_link @LINKS@
"#;

const FISH: &str = r#"
# keel: job names from the running supervisor.
complete -c initctl -n '__fish_seen_subcommand_from @COMMANDS@' -f -a '(initctl __complete-jobs)'
for link in @LINKS@
    complete -c $link -f -a '(initctl __complete-jobs)'
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zsh_completes_a_job_for_each_job_command() {
        let zsh = script(Shell::Zsh);
        assert!(!zsh.contains("'::job:_default'"), "{zsh}");
        // start, stop, restart, reload, status, log (security and usage too).
        assert!(zsh.matches("'::job:_keel_jobs'").count() >= 6, "{zsh}");
        assert!(zsh.contains("compdef _keel_link start stop restart reload status"));
        assert!(zsh.starts_with("#compdef initctl\n"), "{zsh}");
        assert!(
            zsh.find("_keel_jobs() {") < zsh.find("_initctl() {"),
            "{zsh}"
        );
    }

    #[test]
    fn fish_completes_the_job_commands_and_the_links() {
        let fish = script(Shell::Fish);
        assert!(fish.contains(
            "__fish_seen_subcommand_from start stop restart reload status log' -f -a '(initctl __complete-jobs)'"
        ));
        assert!(fish.contains("for link in start stop restart reload status"));
    }
}
