//! The supervisor's options from its configuration file: what the command line
//! does not set, the file does; a bad line is reported and ignored.

use keel_tests::{Keel, Scratch, Setup, bin, wait_for};
use std::fs;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn the_file_sets_what_the_command_line_leaves_and_a_bad_line_is_only_reported() {
    let own = Scratch::new("options");
    let config = own.0.join("supervisor.conf");
    let filelog = own.0.join("filelog");
    fs::write(
        &config,
        format!(
            "# keel's options\nlogdir={}\nsocket={}\n  log-size=12Q\n",
            filelog.display(),
            own.0.join("not-this-socket").display()
        ),
    )
    .unwrap();
    let job =
        "start on startup\nconsole log\nscript\n  echo hello\n  exec sleep 1000\nend script\n";
    // The harness's arguments, less --logdir, plus --config.
    let args = [
        "--confdir",
        "$DIR/conf",
        "--socket",
        "$DIR/control",
        "--cgroup-root",
        "none",
        "--config",
        config.to_str().unwrap(),
    ];
    let keel = Keel::start_with(Setup {
        jobs: &[("talker", job)],
        supervisor: Some((
            bin("keel-supervisor"),
            args.iter().map(|a| a.to_string()).collect(),
        )),
        env: &[],
    });
    // The command line's socket, not the file's: initctl answers there.
    assert!(!own.0.join("not-this-socket").exists());
    // The file's logdir, not the built-in /var/log/keel.
    wait_for("the job's log in the file's logdir", 10 * SECOND, || {
        keel_tests::log_text(&filelog.join("talker.log")) == "hello\n"
    });
    let said = format!(
        "{}:4:12: unknown unit 'Q' (expected K, M or G) (ignored)",
        config.display()
    );
    let console = keel.console();
    assert!(console.contains(&said), "{said}\n{console}");
}
