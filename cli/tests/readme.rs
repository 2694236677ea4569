//! The README's local walkthrough, run as written: the fenced `sh` blocks between
//! `<!-- walkthrough:start -->` and `<!-- walkthrough:end -->` run in one `bash -e` in a
//! throw-away folder (its own `.gavel/`), against the binaries cargo built for this test.
//!
//! The only stand-in is `make`: a shim on `PATH` runs what the Makefile's `up` and `down`
//! run after their build step (`target/debug/gavel-local up` / `down`), since the test build
//! has already made every binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gavel_cli::local::{binary_dir, build_platform_binaries};

/// The `sh` blocks of the walkthrough, in order.
fn walkthrough(readme: &str) -> Vec<String> {
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("the README marks its walkthrough");
    let end = readme[start..]
        .find("<!-- walkthrough:end -->")
        .map(|e| start + e)
        .expect("the walkthrough's end marker");
    let mut blocks = Vec::new();
    let mut rest = &readme[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed code block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

#[test]
fn the_blocks_are_found() {
    let blocks = walkthrough(
        "x\n<!-- walkthrough:start -->\n```sh\na\n```\ntext\n```sh\nb \\\n c\n```\n<!-- walkthrough:end -->\n```sh\nno\n```",
    );
    assert_eq!(blocks, ["a\n", "b \\\n c\n"]);
}

#[test]
fn readme_local_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let blocks = walkthrough(&readme);
    assert!(blocks.len() >= 3, "{blocks:?}");
    let script = blocks.concat();
    for needed in [
        "make up",
        "gavel-local new",
        "gavel bid",
        "gavel watch",
        "gavel show",
        "make down",
    ] {
        assert!(
            script.contains(needed),
            "the walkthrough lost `{needed}`:\n{script}"
        );
    }

    build_platform_binaries().expect("build the platform binaries");
    let bins = binary_dir().expect("the binaries' folder");
    let work = gavel_cli::servers::temp_dir("readme").expect("a folder");
    std::fs::create_dir_all(work.join("target")).expect("target/");
    std::os::unix::fs::symlink(&bins, work.join("target/debug")).expect("target/debug");
    std::fs::create_dir_all(work.join("shim")).expect("shim/");
    let make = work.join("shim/make");
    std::fs::write(
        &make,
        "#!/bin/sh\ncase \"$1\" in\n  up) exec target/debug/gavel-local up ;;\n  \
         down) exec target/debug/gavel-local down ;;\n  \
         *) echo \"make $1: not part of the walkthrough\" >&2; exit 2 ;;\nesac\n",
    )
    .expect("the make shim");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&make, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let path = format!(
        "{}:{}",
        work.join("shim").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-e", "-x", "-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A reader's shell, not the test's: no GAVEL_* settings of the caller.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GAVEL_") {
            cmd.env_remove(key);
        }
    }
    let child = cmd.spawn().expect("bash runs");
    let pid = child.id();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(Duration::from_secs(300));
    // Whatever happened, the platform is stopped.
    let _ = Command::new(work.join("target/debug/gavel-local"))
        .arg("--dir")
        .arg(work.join(".gavel"))
        .arg("down")
        .current_dir(&work)
        .output();
    let out = match out {
        Ok(out) => out.expect("the walkthrough's bash"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the walkthrough did not finish in 300s");
        }
    };
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the walkthrough failed after {:?}:\n{text}",
        started.elapsed()
    );
    for expected in [
        "Gavel is up",
        "Created shop/strat-1962",
        "shop/strat-1962",
        "accepted: leading; price USD 105.00",
        "CLOSED: winner carol at USD 150.00",
        "result    winner carol at USD 150.00",
        "reserve   reserve met",
        "Gavel stopped.",
    ] {
        assert!(
            text.contains(expected),
            "the walkthrough's output lacks {expected:?}:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
