//! A command that dies with the agent, whole: the agent runs every exit step and library save command through this supervisor, the leader of a process group of its own, which kills that group when the agent goes away (killed or not).
//!
//! The kernel tells the supervisor its parent died (`PR_SET_PDEATHSIG`,
//! SIGTERM); the supervisor then kills its process group (itself, the
//! shell, and the `ssh` and SAVLIB it started), so no save runs on with
//! nobody to take its data. The agent kills the same group when a step
//! runs past its time limit or a save stops taking the data. A command
//! that ends normally is left alone with what it started in the background.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs `program args` in this process's group (made its own) until it
/// ends, or until `parent` (the agent's pid) is gone or this process is
/// told to stop; then the whole group is killed. The exit code to leave
/// with (the command's, or 128 + its signal).
pub fn run(parent: i32, program: &OsString, args: &[OsString]) -> Result<i32> {
    // SAFETY: prctl and signal at start-up, before any thread; the handler
    // only stores to an atomic (async-signal-safe).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
        // The leader of a group of its own (the agent starts it so; by
        // hand, it makes one), so killing "its group" kills nothing else.
        if libc::getpgrp() != libc::getpid() {
            libc::setpgid(0, 0);
        }
    }
    // The parent may have died before the prctl: then nobody is there.
    if std::os::unix::process::parent_id() as i32 != parent {
        return Ok(128 + libc::SIGTERM);
    }
    let mut child = std::process::Command::new(program)
        .args(args)
        .spawn()
        .map_err(|e| Error::io(format!("start {}", program.to_string_lossy()), e))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::io("wait for the command", e)),
        }
        if STOP.load(Ordering::SeqCst) || std::os::unix::process::parent_id() as i32 != parent {
            // SAFETY: kill(2) of this process's own group (made above).
            unsafe { libc::kill(0, libc::SIGKILL) };
            return Ok(128 + libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
