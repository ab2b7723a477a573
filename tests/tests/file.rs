//! File events: `start on file FILE=… EVENT=create|modify|delete`, a glob with
//! `MATCH`, and a change made while no supervisor runs.

use keel_tests::{Keel, wait_for};
use std::fs;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// A task that appends what started it to `$DIR/seen`.
fn recorder(condition: &str) -> String {
    format!(
        "start on {condition}\ntask\nscript\n  echo \"$EVENT $FILE $MATCH\" >> $DIR/seen\nend script\n"
    )
}

fn seen(keel: &Keel) -> Vec<String> {
    keel.lines("seen")
}

#[test]
fn a_job_runs_on_create_modify_and_delete_of_its_file() {
    let jobs = [
        ("on-create", recorder("file FILE=$DIR/w/flag EVENT=create")),
        ("on-modify", recorder("file FILE=$DIR/w/flag EVENT=modify")),
        ("on-delete", recorder("file FILE=$DIR/w/flag EVENT=delete")),
        ("on-glob", recorder("file FILE=$DIR/w/*.log EVENT=create")),
    ];
    let jobs: Vec<(&str, &str)> = jobs.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let keel = Keel::start(&jobs);
    let dir = keel.path("w");
    fs::create_dir_all(&dir).unwrap();
    // The directory did not exist at load: reloading watches it now.
    keel.ctl_ok(&["reload-configuration"]);
    let flag = dir.join("flag").display().to_string();

    fs::write(dir.join("flag"), "1").unwrap();
    wait_for("create and modify", 5 * SECOND, || seen(&keel).len() == 2);
    let mut lines = seen(&keel);
    lines.sort();
    assert_eq!(
        lines,
        [format!("create {flag} "), format!("modify {flag} ")]
    );

    fs::remove_file(dir.join("flag")).unwrap();
    wait_for("delete", 5 * SECOND, || seen(&keel).len() == 3);
    assert_eq!(seen(&keel)[2], format!("delete {flag} "));

    fs::write(dir.join("app.log"), "").unwrap();
    wait_for("the glob's create", 5 * SECOND, || seen(&keel).len() >= 4);
    let pattern = format!("{}/*.log", dir.display());
    assert_eq!(
        seen(&keel)[3],
        format!("create {pattern} {}/app.log", dir.display())
    );
}

#[test]
fn a_file_created_while_no_supervisor_runs_starts_the_job_under_its_successor() {
    let keel = Keel::start(&[("on-create", &recorder("file FILE=$DIR/flag EVENT=create"))]);
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
    unsafe { libc::kill(old, libc::SIGSTOP) };
    fs::write(keel.path("flag"), "1").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("the job to run once", 10 * SECOND, || {
        seen(&keel).len() == 1
    });
    assert_eq!(
        seen(&keel),
        [format!("create {} ", keel.path("flag").display())]
    );
}
