//! Mail: templates, the durable outbox and its delivery worker, and the
//! transports. A mail is an outbox row written in the same transaction as
//! the change that causes it; the worker delivers it afterwards, retrying
//! with backoff, so a relay outage delays mail but never loses it.

pub mod outbox;
pub mod templates;
pub mod transport;

use std::sync::Arc;

use chrono::NaiveDateTime;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use self::templates::{Rendered, TemplateError, Templates};
use self::transport::Transport;
use crate::config::Settings;
use crate::db::DbConnection;
use crate::db::outbox::{self as rows, OutboxRow};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    LoginOtp,
    SecurityNotice,
}

impl MailKind {
    pub const ALL: &'static [MailKind] = &[MailKind::LoginOtp, MailKind::SecurityNotice];

    pub fn name(self) -> &'static str {
        match self {
            Self::LoginOtp => "login_otp",
            Self::SecurityNotice => "security_notice",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Whether the mail holds a secret that is not kept after sending, so
    /// it cannot be rendered again.
    pub fn carries_secret(self) -> bool {
        matches!(self, Self::LoginOtp)
    }
}

/// The template variables that are not secret (kept in the outbox row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MailContext {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// For security notices: totp_confirmed, totp_removed or recovery_codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// One mail to queue.
pub struct OutgoingMail<'a> {
    pub kind: MailKind,
    pub language: &'a str,
    pub recipient: &'a str,
    pub context: MailContext,
    /// The one-time code, rendered into the bodies and never stored apart.
    pub code: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error("{0}")]
    Transport(String),
    #[error("LATCHKEY_MAIL_FROM: {0}")]
    From(String),
}

pub struct Mailer {
    templates: Templates,
    transport: Transport,
    from: Mailbox,
    /// The domain of Message-IDs.
    domain: String,
    wake: Arc<Notify>,
}

impl Mailer {
    pub fn new(settings: &Settings) -> Result<Self, MailSetupError> {
        let templates = Templates::load(settings.templates_dir.as_deref())?;
        let transport = match &settings.smtp_url {
            Some(url) => Transport::smtp(url),
            None => Transport::files(&settings.mail_dir()),
        }
        .map_err(MailSetupError::Transport)?;
        let from: Mailbox = settings
            .mail_from
            .parse()
            .map_err(|e| MailSetupError::From(format!("{e}")))?;
        let domain = from.email.domain().to_owned();
        Ok(Self {
            templates,
            transport,
            from,
            domain,
            wake: Arc::new(Notify::new()),
        })
    }

    fn render(
        &self,
        kind: MailKind,
        language: &str,
        context: &MailContext,
        code: Option<&str>,
    ) -> Result<Rendered, TemplateError> {
        let mut values = serde_json::to_value(context).map_err(|e| TemplateError(e.to_string()))?;
        if let (Some(code), Some(object)) = (code, values.as_object_mut()) {
            object.insert("code".into(), code.into());
        }
        self.templates.render(
            kind,
            language,
            &minijinja::Value::from(minijinja::value::Serde(values)),
        )
    }

    /// Renders `mail` and writes it as a pending outbox row, inside the
    /// caller's transaction. Call [`Mailer::wake`] after the commit.
    pub fn enqueue(
        &self,
        conn: &mut DbConnection,
        mail: OutgoingMail<'_>,
        now: NaiveDateTime,
    ) -> Result<String, ApiError> {
        let rendered = self
            .render(mail.kind, mail.language, &mail.context, mail.code)
            .map_err(|e| ApiError::internal(format!("mail template: {e}")))?;
        let id = Uuid::new_v4().to_string();
        let row = OutboxRow {
            message_id: format!("<{id}@{}>", self.domain),
            id: id.clone(),
            kind: mail.kind.name().to_owned(),
            language: mail.language.to_owned(),
            recipient: mail.recipient.to_owned(),
            subject: rendered.subject,
            body_text: Some(rendered.text),
            body_html: Some(rendered.html),
            context: serde_json::to_string(&mail.context).map_err(ApiError::internal)?,
            status: rows::PENDING.to_owned(),
            attempts: 0,
            next_attempt_at: now,
            lease_owner: None,
            lease_until: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            sent_at: None,
        };
        rows::insert(conn, &row)?;
        Ok(id)
    }

    /// Renders a dead row's bodies again, for a retry. Mails that carried a
    /// one-time code cannot be: the code was never kept.
    pub fn render_again(&self, row: &OutboxRow) -> Result<Rendered, ApiError> {
        let kind = MailKind::from_name(&row.kind).ok_or_else(|| {
            ApiError::internal(format!("outbox row of unknown kind {}", row.kind))
        })?;
        if kind.carries_secret() {
            return Err(ApiError::conflict(
                "This mail carried a one-time code, which is not kept after delivery fails for good; \
                 ask for a new code instead.",
            ));
        }
        let context: MailContext =
            serde_json::from_str(&row.context).map_err(ApiError::internal)?;
        self.render(kind, &row.language, &context, None)
            .map_err(|e| ApiError::internal(format!("mail template: {e}")))
    }

    /// Tells the delivery worker that rows are waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The lettre message of a row: multipart/alternative, with the row's
    /// stable Message-ID (a resend after a crash carries the same one).
    fn message(&self, row: &OutboxRow) -> Result<Message, String> {
        let to: Mailbox = row
            .recipient
            .parse()
            .map_err(|e| format!("invalid recipient address: {e}"))?;
        let (Some(text), Some(html)) = (&row.body_text, &row.body_html) else {
            return Err("the mail's body is no longer stored".to_owned());
        };
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(row.message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            ))
            .map_err(|e| format!("cannot build the mail: {e}"))
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }
}
