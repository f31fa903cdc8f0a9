//! The serving side of the deployer's relay (`clan_deploy::relay`): the first machine of a
//! run that gets the agent passes the compressed agent on to the others of the run.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::AgentError;

/// The machine side of the relay (`clan-agent agent serve-file PATH`): serves `path`'s bytes to
/// every TCP connection, on a port of the system's choosing printed as `listening <port>` on
/// `out`, until `session` (the admin's SSH session, as stdin) ends or half an hour has
/// passed. The content is the compressed agent: public, and checked by digest where it
/// arrives.
pub fn serve_file(
    path: &Path,
    mut session: impl std::io::Read + Send + 'static,
    mut out: impl std::io::Write,
) -> Result<(), AgentError> {
    let content =
        std::sync::Arc::new(std::fs::read(path).map_err(AgentError::io("reading", path))?);
    let listener = std::net::TcpListener::bind("[::]:0")
        .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .map_err(AgentError::io(
            "listening for the agent's other machines with",
            path,
        ))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = writeln!(out, "listening {port}");
    let _ = out.flush();
    let until = Instant::now() + Duration::from_secs(1800);
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::sync::Arc::clone(&ended);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut session, &mut std::io::sink());
        watcher.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let _ = listener.set_nonblocking(true);
    while Instant::now() < until && !ended.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let content = std::sync::Arc::clone(&content);
                std::thread::spawn(move || {
                    use std::io::Write as _;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(&content);
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}
