//! Projects (`/dashboard/projects`): the tenant's projects, and for admins and owners create, rename and archive,
//! through `service::projects` as the management API does. Archiving stops a project's keys at once.

use super::errors::DashError;
use super::form::{Ids, NoFields, Params, Posted};
use super::format;
use super::keys::{all_projects, keys_path};
use super::page::{self, Chrome, FieldErrors, Section};
use super::session::SignedIn;
use crate::app::AppState;
use crate::service::projects::{self as service, ProjectInput};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use tollgate_core::tenant::ProjectStatus;

/// The projects page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct ProjectsQuery {
    /// What the last post did.
    #[serde(default)]
    notice: Option<String>,
}

/// A project's name, as a form sends it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NameForm {
    #[serde(default)]
    name: String,
}

/// One row.
struct Row {
    id: String,
    name: String,
    keys_href: String,
    status: &'static str,
    active: bool,
    created: String,
    rename: String,
    rename_open: bool,
    rename_errors: FieldErrors,
}

/// `projects.html`.
#[derive(Template)]
#[template(path = "dashboard/projects.html")]
struct ProjectsTemplate {
    chrome: Chrome,
    can_write: bool,
    csrf: String,
    notice: Option<&'static str>,
    rows: Vec<Row>,
    create: NameForm,
    create_errors: FieldErrors,
}

/// A rename form sent back: the project, the name sent, the errors.
type Rename = (String, String, FieldErrors);

async fn render(
    state: &AppState,
    me: &SignedIn,
    notice: Option<&'static str>,
    create: NameForm,
    create_errors: FieldErrors,
    mut rename: Option<Rename>,
) -> Result<Response, DashError> {
    let status = if create_errors.any() || rename.as_ref().is_some_and(|r| r.2.any()) {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    let rows = all_projects(state, me)
        .await?
        .into_iter()
        .map(|p| {
            let (name_sent, rename_open, rename_errors) = match rename.take_if(|r| r.0 == p.id) {
                Some((_, name, errors)) => (name, true, errors),
                None => (p.name.clone(), false, FieldErrors::default()),
            };
            Row {
                keys_href: keys_path(&p.id),
                status: p.status.as_str(),
                active: p.status == ProjectStatus::Active,
                created: format::datetime(p.created_at),
                rename: name_sent,
                rename_open,
                rename_errors,
                name: p.name,
                id: p.id,
            }
        })
        .collect();
    let template = ProjectsTemplate {
        chrome: Chrome::page(me, Section::Projects, &me.tenant_name),
        can_write: me.can_write(),
        csrf: me.csrf.clone(),
        notice,
        rows,
        create,
        create_errors,
    };
    Ok(page::html(status, &template))
}

/// `GET /dashboard/projects`.
pub async fn page(
    State(state): State<AppState>,
    me: SignedIn,
    Params(query): Params<ProjectsQuery>,
) -> Result<Response, DashError> {
    let notice = match query.notice.as_deref() {
        Some("created") => Some("The project is created."),
        Some("renamed") => Some("The project is renamed."),
        Some("archived") => Some("The project is archived: its keys no longer work."),
        _ => None,
    };
    render(
        &state,
        &me,
        notice,
        NameForm::default(),
        FieldErrors::default(),
        None,
    )
    .await
}

/// `POST /dashboard/projects`.
pub async fn create(
    State(state): State<AppState>,
    Posted { me, form }: Posted<NameForm>,
) -> Result<Response, DashError> {
    me.require_write()?;
    let input = ProjectInput {
        name: form.name.clone(),
    };
    match service::create(&state, &me.caller(), &me.tenant_id, input).await {
        Ok(_) => Ok(page::see_other("/dashboard/projects?notice=created")),
        Err(error) => {
            let errors = FieldErrors::from_api(error, &[("name", "name")])?;
            render(&state, &me, None, form, errors, None).await
        }
    }
}

/// `POST /dashboard/projects/{project_id}/rename`.
pub async fn rename(
    State(state): State<AppState>,
    Ids(project_id): Ids<String>,
    Posted { me, form }: Posted<NameForm>,
) -> Result<Response, DashError> {
    me.require_write()?;
    let input = ProjectInput {
        name: form.name.clone(),
    };
    match service::rename(&state, &me.caller(), &me.tenant_id, &project_id, input).await {
        Ok(_) => Ok(page::see_other("/dashboard/projects?notice=renamed")),
        Err(error) => {
            let errors = FieldErrors::from_api(error, &[("name", "name")])?;
            render(
                &state,
                &me,
                None,
                NameForm::default(),
                FieldErrors::default(),
                Some((project_id, form.name, errors)),
            )
            .await
        }
    }
}

/// `POST /dashboard/projects/{project_id}/archive`.
pub async fn archive(
    State(state): State<AppState>,
    Ids(project_id): Ids<String>,
    Posted { me, .. }: Posted<NoFields>,
) -> Result<Response, DashError> {
    me.require_write()?;
    service::archive(&state, &me.caller(), &me.tenant_id, &project_id).await?;
    Ok(page::see_other("/dashboard/projects?notice=archived"))
}
