//! A real SMTP server inside the test process (mailin-embedded on a random
//! port) that records what it receives, and can refuse mail on demand.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_parser::MessageParser;
use mailin_embedded::response::{INTERNAL_ERROR, OK};
use mailin_embedded::{Handler, Response, Server};

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.raw)
            .expect("a parsable mail")
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        self.parsed().body_text(0).unwrap_or_default().into_owned()
    }

    pub fn html(&self) -> String {
        self.parsed().body_html(0).unwrap_or_default().into_owned()
    }

    pub fn header(&self, name: &str) -> String {
        self.parsed()
            .header_raw(name)
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The 6 to 8 digit code in the text body.
    pub fn code(&self) -> String {
        self.text()
            .split_whitespace()
            .find(|word| (6..=8).contains(&word.len()) && word.chars().all(|c| c.is_ascii_digit()))
            .expect("a code in the mail")
            .to_owned()
    }
}

#[derive(Clone)]
struct Recorder {
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    refusing: Arc<AtomicBool>,
    /// Milliseconds each accepted mail takes to be acknowledged.
    delay_ms: Arc<AtomicU64>,
    recipients: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Recorder {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.refusing.load(Ordering::SeqCst) {
            return INTERNAL_ERROR;
        }
        self.recipients = to.to_vec();
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if self.refusing.load(Ordering::SeqCst) {
            return INTERNAL_ERROR;
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let mail = ReceivedMail {
            recipients: std::mem::take(&mut self.recipients),
            raw: std::mem::take(&mut self.data),
        };
        self.received.lock().unwrap().push(mail);
        OK
    }
}

#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    refusing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

impl SmtpServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an SMTP port");
        Self::serve(listener)
    }

    /// A port with no server behind it yet (mail to it is refused at the
    /// TCP level until [`SmtpServer::start_on`]).
    pub fn reserve_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub fn start_on(port: u16) -> Self {
        Self::serve(TcpListener::bind(("127.0.0.1", port)).expect("bind the reserved SMTP port"))
    }

    fn serve(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let refusing = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let recorder = Recorder {
            received: received.clone(),
            refusing: refusing.clone(),
            delay_ms: delay_ms.clone(),
            recipients: vec![],
            data: vec![],
        };
        let mut server = Server::new(recorder);
        server
            .with_name("smtp.test")
            .with_num_threads(64)
            .with_tcp_listener(listener);
        // serve() never returns: the thread lives as long as the test process.
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self {
            port,
            received,
            refusing,
            delay_ms,
        }
    }

    pub fn url(&self) -> String {
        url_for(self.port)
    }

    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Makes every mail take `ms` milliseconds to be acknowledged (a slow
    /// relay: deliveries stay in flight).
    pub fn slow(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `count` mails arrived; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedMail> {
        for _ in 0..500 {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {count} mails, got {}", self.received().len());
    }
}

/// `smtp://` as an operator writes it: STARTTLS when offered (this test
/// server offers none, so the session stays plain).
pub fn url_for(port: u16) -> String {
    format!("smtp://127.0.0.1:{port}")
}
