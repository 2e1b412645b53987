//! The sandbox's moto fixes (`deploy/local/moto_server.py`) keep moto's
//! answers: their Python tests, in moto's own process, run in the suite.

use std::process::Command;

use muster_sim::testkit::{venv_python, workspace_root};

#[test]
fn the_moto_fixes_keep_motos_answers() {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} not found: run deploy/local/venv.sh (or set MUSTER_VENV)",
        python.display()
    );
    let out = Command::new(&python)
        .current_dir(workspace_root())
        .args(["-m", "unittest", "-v", "deploy/local/moto_server_test.py"])
        .output()
        .expect("the venv's python runs");
    // unittest reports on stderr.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Ran 7 tests"), "every test ran:\n{report}");
    assert!(!report.contains("skipped"), "{report}");
}
