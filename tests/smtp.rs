//! Email through an SMTP relay (`--smtp`): delivered when the relay takes it,
//! kept queued (with the error) and retried when it does not. The relay here
//! is a small SMTP server on loopback that speaks the real protocol to
//! lettre's client and keeps what it receives.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialin::admin::mail::SmtpRelay;
use dialin::admin::service::EnableRequest;
use dialin::admin::{Options, Service};
use dialin::time::{ManualClock, Timestamp};

struct Relay {
    addr: SocketAddr,
    accepting: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<String>>>,
}

/// Serves up to `max_connections` SMTP sessions; while `accepting` is
/// false it answers 421 (service not available) and hangs up.
fn relay(max_connections: usize) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = Arc::new(AtomicBool::new(true));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (acc, rec) = (accepting.clone(), received.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max_connections) {
            let Ok(mut stream) = stream else { continue };
            if !acc.load(Ordering::SeqCst) {
                let _ = stream.write_all(b"421 relay down for the test\r\n");
                continue;
            }
            let _ = session(&mut stream, &rec);
        }
    });
    Relay {
        addr,
        accepting,
        received,
    }
}

fn session(stream: &mut std::net::TcpStream, received: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    stream.write_all(b"220 relay.test ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => stream.write_all(b"250 relay.test\r\n")?,
            "MAIL" | "RCPT" | "RSET" | "NOOP" => stream.write_all(b"250 OK\r\n")?,
            "DATA" => {
                stream.write_all(b"354 go ahead\r\n")?;
                let mut message = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    message.push_str(&line);
                }
                received.lock().unwrap().push(message);
                stream.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                stream.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => stream.write_all(b"502 not implemented\r\n")?,
        }
    }
}

fn service(dir: &tempfile::TempDir, relay: SocketAddr) -> Service {
    service_with_clock(
        dir,
        relay,
        &ManualClock::new(Timestamp::from_millis(1_800_000_000_000)),
    )
}

fn service_with_clock(dir: &tempfile::TempDir, relay: SocketAddr, clock: &ManualClock) -> Service {
    Service::open(
        &dir.path().join("dialin.sqlite"),
        dir.path().join("outbox"),
        Options {
            clock: Arc::new(clock.clone()),
            rng_seed: Some(3),
            smtp: Some(format!("smtp://{relay}").parse::<SmtpRelay>().unwrap()),
        },
    )
    .unwrap()
}

fn enable(svc: &Service, email: &str) -> dialin::admin::service::EnableOutcome {
    svc.enable_user(
        "test",
        &EnableRequest {
            email: Some(email.parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn the_relay_receives_the_email_and_it_is_marked_delivered() {
    let relay = relay(4);
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir, relay.addr);
    let out = enable(&svc, "alice@contoso.com");
    // Emails with a relay go out on the delivery pass (the server's ticker).
    assert_eq!(svc.deliver_queued().unwrap(), 1);
    let mail = svc.email(out.email_id.unwrap()).unwrap();
    assert_eq!(mail.status, "delivered");
    let received = relay.received.lock().unwrap();
    assert_eq!(received.len(), 1);
    let id = out.user.conference_id.unwrap().to_string();
    assert!(received[0].contains(&id), "{}", received[0]);
    assert!(received[0].contains("alice@contoso.com"));
}

#[test]
fn a_relay_that_is_down_leaves_the_email_queued_and_a_retry_delivers_it() {
    let relay = relay(4);
    relay.accepting.store(false, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let svc = service_with_clock(&dir, relay.addr, &clock);

    let out = enable(&svc, "alice@contoso.com");
    assert!(
        out.changed,
        "the admin operation succeeds with the relay down"
    );
    assert_eq!(svc.deliver_queued().unwrap(), 0);
    let mail = svc.email(out.email_id.unwrap()).unwrap();
    assert_eq!(mail.status, "queued");
    assert!(
        mail.last_error.as_deref().unwrap().contains("SMTP relay"),
        "{mail:?}"
    );
    assert!(mail.file.is_some(), "the .eml copy is written regardless");

    relay.accepting.store(true, Ordering::SeqCst);
    // The server's periodic pass waits out the back-off (2 s after one failure)...
    assert_eq!(svc.deliver_due().unwrap(), 0);
    assert_eq!(
        svc.email(out.email_id.unwrap()).unwrap().attempts,
        1,
        "not tried again yet"
    );
    clock.advance(Duration::from_secs(2)).unwrap();
    // ...then delivers.
    assert_eq!(svc.deliver_due().unwrap(), 1);
    assert_eq!(
        svc.email(out.email_id.unwrap()).unwrap().status,
        "delivered"
    );
    assert_eq!(relay.received.lock().unwrap().len(), 1, "sent once");
    assert_eq!(svc.deliver_queued().unwrap(), 0, "nothing left to send");
}
