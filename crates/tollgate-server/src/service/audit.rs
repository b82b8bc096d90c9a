//! Reading the audit log: the query string of `GET /v1/organization/audit_logs` checked into an [`AuditQuery`],
//! a page of events, and exports (JSON lines or CSV) of every match, streamed page by page from the store so that
//! an export of any size holds one page in memory; and checking the hash chains (`tollgate audit verify`).

use crate::app::App;
use crate::error::ApiError;
use crate::extract::page_limit;
use crate::objects::{AUDIT_CSV_HEADER, AuditEventObject, ListObject};
use crate::service::usage::seconds;
use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use std::sync::Arc;
use tollgate_core::audit::{AuditQuery, ChainCheck, ChainedEvent, EventType};
use tollgate_core::ports::{Page, StoreError};

/// Events read from the store per page of an export.
const EXPORT_PAGE: u32 = 500;

/// The raw query string, parsed here so each bad value names its parameter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditParams {
    /// An event type's name.
    pub event_type: Option<String>,
    /// A member's or key's id.
    pub actor_id: Option<String>,
    /// A project key's id.
    pub key_id: Option<String>,
    /// Unix seconds (inclusive).
    pub since: Option<String>,
    /// Unix seconds (exclusive).
    pub until: Option<String>,
    /// The previous page's last id.
    pub after: Option<String>,
    /// 1–100.
    pub limit: Option<String>,
    /// `jsonl` or `csv`; absent: a page.
    pub format: Option<String>,
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One page, as a list object.
    List,
    /// Every match, one JSON object per line.
    Jsonl,
    /// Every match, as CSV with a header row.
    Csv,
}

impl AuditParams {
    /// The query for `tenant_id`'s log, and how to answer it.
    pub fn query(&self, tenant_id: &str) -> Result<(AuditQuery, Format), ApiError> {
        let kind = match self.event_type.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(EventType::parse(t).ok_or_else(|| {
                ApiError::bad_request(
                    format!("Unknown event_type {:?}", super::excerpt(t)),
                    Some("event_type"),
                )
            })?),
        };
        let bound = |raw: &Option<String>, param| {
            raw.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| seconds(Some(s), param, 0))
                .transpose()
        };
        let format = match self.format.as_deref() {
            None | Some("") => Format::List,
            Some("jsonl") => Format::Jsonl,
            Some("csv") => Format::Csv,
            Some(other) => {
                return Err(ApiError::bad_request(
                    format!(
                        "format must be jsonl or csv, not {:?}",
                        super::excerpt(other)
                    ),
                    Some("format"),
                ));
            }
        };
        let limit = page_limit(self.limit.as_deref())?;
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok((
            AuditQuery {
                tenant_id: tenant_id.to_owned(),
                kind,
                actor_id: text(&self.actor_id),
                key_id: text(&self.key_id),
                since: bound(&self.since, "since")?,
                until: bound(&self.until, "until")?,
                before_id: text(&self.after),
                limit,
            },
            format,
        ))
    }
}

/// One page of events, newest first, before rendering.
pub async fn events(app: &App, query: &AuditQuery) -> Result<Page<ChainedEvent>, ApiError> {
    Ok(app.store.audit_events(query).await?)
}

/// One page of events, newest first.
pub async fn list(app: &App, query: &AuditQuery) -> Result<ListObject<AuditEventObject>, ApiError> {
    let page = events(app, query).await?;
    Ok(ListObject::from_page(
        &page,
        |e| &e.event.id,
        |e| AuditEventObject::of(&e.event),
    ))
}

/// Every event `query` matches (its `before_id` and filters; its `limit` ignored), newest first, rendered as
/// `format` (JSON lines or CSV), one store page at a time. A store failure mid-way ends the stream with an error,
/// which cuts the response: a client never mistakes a partial export for a whole one.
pub fn export(
    app: Arc<App>,
    query: AuditQuery,
    format: Format,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    struct State {
        app: Arc<App>,
        query: AuditQuery,
        header: bool,
        done: bool,
    }
    let start = State {
        app,
        query: AuditQuery {
            limit: EXPORT_PAGE,
            ..query
        },
        header: format == Format::Csv,
        done: false,
    };
    futures::stream::try_unfold(start, move |mut state| async move {
        if state.done {
            return Ok(None);
        }
        let page: Page<_> = state.app.store.audit_events(&state.query).await?;
        let mut out = Vec::with_capacity(page.items.len() * 400);
        if std::mem::take(&mut state.header) {
            csv_line(&mut out, AUDIT_CSV_HEADER.iter().copied())?;
        }
        for e in &page.items {
            let object = AuditEventObject::of(&e.event);
            match format {
                Format::Csv => csv_line(&mut out, object.csv_record().iter().map(String::as_str))?,
                Format::Jsonl | Format::List => {
                    serde_json::to_writer(&mut out, &object)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    out.push(b'\n');
                }
            }
        }
        state.query.before_id = page.items.last().map(|e| e.event.id.clone());
        state.done = !page.has_more;
        Ok(Some((Bytes::from(out), state)))
    })
}

/// Appends one CSV record (RFC 4180 quoting, `\n` line ends) to `out`.
fn csv_line<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = &'a str>) -> Result<(), StoreError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    writer
        .write_record(cells)
        .and_then(|()| writer.flush().map_err(csv::Error::from))
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// Events read from the store per page of a check.
const VERIFY_PAGE: u32 = 1_000;

/// What checking one tenant's chain found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainReport {
    /// The tenant.
    pub tenant_id: String,
    /// Events checked (from the anchor on).
    pub events: u64,
    /// The chain's head as the store has it (`seq`, hash): kept elsewhere, it shows later whether the whole
    /// chain was rewritten.
    pub head_seq: i64,
    /// The head's hash.
    pub head_hash: String,
    /// The first broken link, if any.
    pub broken: Option<String>,
}

/// Recomputes the hash chain of one tenant, or of every tenant, from its anchor to its head, a page at a time.
pub async fn verify(app: &App, tenant_id: Option<&str>) -> Result<Vec<ChainReport>, StoreError> {
    let mut reports = Vec::new();
    for chain in app.store.audit_chains(tenant_id).await? {
        let mut check = ChainCheck::new(chain.anchor.clone());
        let (mut after, mut events, mut broken) = (chain.anchor.seq, 0_u64, None);
        'pages: loop {
            let page = app
                .store
                .audit_chain_events(&chain.tenant_id, after, VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.seq;
            for e in &page {
                if let Err(link) = check.next(e) {
                    broken = Some(link.to_string());
                    break 'pages;
                }
                events += 1;
            }
        }
        if broken.is_none() {
            broken = check.finish(&chain.head).err().map(|link| link.to_string());
        }
        reports.push(ChainReport {
            tenant_id: chain.tenant_id,
            events,
            head_seq: chain.head.seq,
            head_hash: chain.head.hash,
            broken,
        });
    }
    Ok(reports)
}
