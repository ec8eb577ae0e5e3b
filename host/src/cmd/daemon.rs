//! Background servers: `start` re-runs this executable with `--foreground`, detached, and
//! waits until it answers; `stop` and `status` find it by its pid file.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::TargetArgs;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn state_dir(target: &TargetArgs) -> PathBuf {
    if let Some(dir) = &target.state_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("inference");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/inference"),
        None => std::env::temp_dir().join("inference"),
    }
}

fn pid_file(target: &TargetArgs) -> PathBuf {
    state_dir(target).join(format!("server-{}.pid", target.port))
}

fn log_file(target: &TargetArgs) -> PathBuf {
    state_dir(target).join(format!("server-{}.log", target.port))
}

fn read_pid(target: &TargetArgs) -> Option<i32> {
    fs::read_to_string(pid_file(target)).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // Signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A minimal blocking HTTP GET on loopback, so `status` needs no async runtime.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn tail(path: &PathBuf, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn start(target: &TargetArgs) -> Result<()> {
    let addr = SocketAddr::new(target.host, target.port);
    if let Some(pid) = read_pid(target).filter(|p| alive(*p)) {
        bail!(
            "a server is already running on port {} (pid {pid}); stop it with `inference server stop --port {}`",
            target.port,
            target.port
        );
    }
    // Fail before detaching when the port is taken, with a message the user can act on.
    TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr}: is another server using port {}?", target.port))?;

    let dir = state_dir(target);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log_path = log_file(target);
    let log = fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--foreground".into());
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the server process")?;
    let pid = child.id() as i32;
    fs::write(pid_file(target), pid.to_string())?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let _ = fs::remove_file(pid_file(target));
            bail!(
                "the server exited during start-up ({status}). Log {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            );
        }
        if matches!(http_get(addr, "/readiness"), Ok((200, _))) {
            break;
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = fs::remove_file(pid_file(target));
            bail!(
                "the server did not become ready within {READY_TIMEOUT:?}. Log {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("Inference server running at http://{addr} (pid {pid})");
    println!("Log: {}", log_path.display());
    Ok(())
}

pub fn stop(target: &TargetArgs) -> Result<()> {
    let Some(pid) = read_pid(target) else {
        bail!(
            "no background server recorded for port {} (no {})",
            target.port,
            pid_file(target).display()
        );
    };
    if !alive(pid) {
        let _ = fs::remove_file(pid_file(target));
        bail!("the server for port {} (pid {pid}) is not running", target.port);
    }
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) && Instant::now() < deadline {
        // Reap it if it is our child (it is not, normally); otherwise just poll.
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = fs::remove_file(pid_file(target));
    println!("Inference server on port {} stopped (pid {pid})", target.port);
    Ok(())
}

pub fn status(target: &TargetArgs) -> Result<bool> {
    let addr = SocketAddr::new(target.host, target.port);
    let pid = read_pid(target).filter(|p| alive(*p));
    match http_get(addr, "/info") {
        Ok((200, body)) => {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            println!("running at http://{addr}{pid}: {}", body.trim());
            Ok(true)
        }
        _ => {
            match pid {
                Some(p) => println!("process {p} exists but http://{addr} does not answer"),
                None => println!("not running on http://{addr}"),
            }
            Ok(false)
        }
    }
}
