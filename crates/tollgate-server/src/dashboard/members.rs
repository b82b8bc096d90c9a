//! Members (`/dashboard/members`): everyone sees who belongs to the organization; owners add members, change roles,
//! set dashboard passwords and remove members, through `service::members` as the management API does. The last
//! owner can be neither demoted nor removed: the refusal is a message on this page, not an error page.

use super::errors::DashError;
use super::form::{Ids, NoFields, Params, Posted};
use super::format;
use super::page::{self, Chrome, FieldErrors, Section};
use super::session::SignedIn;
use crate::app::AppState;
use crate::error::ApiError;
use crate::service::members::{self as service, AddMember};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tollgate_core::ports::PageRequest;
use tollgate_core::role::Role;

/// Members listed (the store's largest page).
const PAGE: u32 = 100;

/// The members page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct MembersQuery {
    /// What the last post did.
    #[serde(default)]
    notice: Option<String>,
}

/// The add form's fields. No `Debug`: it holds a password.
#[derive(Clone, Default, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// The role form's field.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

/// The password form's field. No `Debug`.
#[derive(Clone, Default, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
}

/// A role option of a `<select>`.
struct RoleOption {
    value: &'static str,
    selected: bool,
}

fn role_options(current: &str) -> Vec<RoleOption> {
    [Role::Member, Role::Admin, Role::Owner]
        .into_iter()
        .map(|r| RoleOption {
            value: r.as_str(),
            selected: r.as_str() == current,
        })
        .collect()
}

/// One row.
struct Row {
    id: String,
    email: String,
    role: &'static str,
    roles: Vec<RoleOption>,
    has_password: bool,
    added: String,
    is_me: bool,
    password_open: bool,
    password_errors: FieldErrors,
}

/// `members.html`.
#[derive(Template)]
#[template(path = "dashboard/members.html")]
struct MembersTemplate {
    chrome: Chrome,
    is_owner: bool,
    csrf: String,
    notice: Option<&'static str>,
    /// A refusal no form field explains (the last owner).
    page_error: Option<String>,
    rows: Vec<Row>,
    add_email: String,
    add_roles: Vec<RoleOption>,
    add_errors: FieldErrors,
}

/// What the page shows besides the members: the outcome of the post it answers.
#[derive(Default)]
struct Outcome {
    notice: Option<&'static str>,
    page_error: Option<String>,
    add_email: String,
    add_role: String,
    add_errors: FieldErrors,
    /// A password form sent back: the member and the errors.
    password: Option<(String, FieldErrors)>,
}

async fn render(state: &AppState, me: &SignedIn, outcome: Outcome) -> Result<Response, DashError> {
    let status = if outcome.page_error.is_some() {
        StatusCode::CONFLICT
    } else if outcome.add_errors.any() || outcome.password.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let members = state
        .store
        .list_members(
            &me.tenant_id,
            &PageRequest {
                after: None,
                limit: PAGE,
            },
        )
        .await
        .map_err(ApiError::from)?
        .items;
    let mut password = outcome.password;
    let rows = members
        .into_iter()
        .map(|m| {
            let (password_open, password_errors) = match password.take_if(|p| p.0 == m.id) {
                Some((_, errors)) => (true, errors),
                None => (false, FieldErrors::default()),
            };
            Row {
                role: m.role.as_str(),
                roles: role_options(m.role.as_str()),
                has_password: m.password_hash.is_some(),
                added: format::datetime(m.created_at),
                is_me: m.id == me.member_id,
                password_open,
                password_errors,
                email: m.email,
                id: m.id,
            }
        })
        .collect();
    let add_role = if outcome.add_role.is_empty() {
        Role::Member.as_str()
    } else {
        outcome.add_role.as_str()
    };
    let template = MembersTemplate {
        chrome: Chrome::page(me, Section::Members, &me.tenant_name),
        is_owner: me.is_owner(),
        csrf: me.csrf.clone(),
        notice: outcome.notice,
        page_error: outcome.page_error,
        rows,
        add_roles: role_options(add_role),
        add_email: outcome.add_email,
        add_errors: outcome.add_errors,
    };
    Ok(page::html(status, &template))
}

/// `GET /dashboard/members`.
pub async fn page(
    State(state): State<AppState>,
    me: SignedIn,
    Params(query): Params<MembersQuery>,
) -> Result<Response, DashError> {
    let notice = match query.notice.as_deref() {
        Some("added") => Some("The member is added."),
        Some("role") => Some("The role is changed; it applies from the member's next request."),
        Some("password") => Some("The password is set: the member can sign in with it now."),
        Some("removed") => Some("The member is removed, and their admin keys are revoked."),
        _ => None,
    };
    render(
        &state,
        &me,
        Outcome {
            notice,
            ..Outcome::default()
        },
    )
    .await
}

/// A refusal of a change to an existing member: the last-owner rule (and any other conflict) is a message on the
/// page; anything else is an error page.
fn refusal(error: ApiError) -> Result<Outcome, DashError> {
    match error {
        ApiError::Conflict { message, .. } => Ok(Outcome {
            page_error: Some(message),
            ..Outcome::default()
        }),
        other => Err(DashError::from(other)),
    }
}

/// `POST /dashboard/members`.
pub async fn add(
    State(state): State<AppState>,
    Posted { me, form }: Posted<AddForm>,
) -> Result<Response, DashError> {
    me.require_owner()?;
    let password = Some(form.password).filter(|p| !p.is_empty());
    let input = AddMember {
        email: form.email.clone(),
        role: form.role.clone(),
        password,
    };
    match service::add(&state, &me.caller(), &me.tenant_id, input).await {
        Ok(_) => Ok(page::see_other("/dashboard/members?notice=added")),
        Err(error) => {
            let add_errors = match error {
                // An email already there belongs next to the email field.
                ApiError::Conflict { message, .. } => FieldErrors::field("email", message),
                other => FieldErrors::from_api(
                    other,
                    &[
                        ("email", "email"),
                        ("role", "role"),
                        ("password", "password"),
                    ],
                )?,
            };
            render(
                &state,
                &me,
                Outcome {
                    add_email: form.email,
                    add_role: form.role,
                    add_errors,
                    ..Outcome::default()
                },
            )
            .await
        }
    }
}

/// `POST /dashboard/members/{member_id}/role`.
pub async fn role(
    State(state): State<AppState>,
    Ids(member_id): Ids<String>,
    Posted { me, form }: Posted<RoleForm>,
) -> Result<Response, DashError> {
    me.require_owner()?;
    let outcome = match service::parse_role(&form.role) {
        Err(error) => Outcome {
            page_error: Some(error.to_string()),
            ..Outcome::default()
        },
        Ok(role) => {
            match service::set_role(&state, &me.caller(), &me.tenant_id, &member_id, role).await {
                Ok(_) => return Ok(page::see_other("/dashboard/members?notice=role")),
                Err(error) => refusal(error)?,
            }
        }
    };
    render(&state, &me, outcome).await
}

/// `POST /dashboard/members/{member_id}/password`.
pub async fn password(
    State(state): State<AppState>,
    Ids(member_id): Ids<String>,
    Posted { me, form }: Posted<PasswordForm>,
) -> Result<Response, DashError> {
    me.require_owner()?;
    match service::set_password(
        &state,
        &me.caller(),
        &me.tenant_id,
        &member_id,
        Some(form.password),
    )
    .await
    {
        Ok(_) => Ok(page::see_other("/dashboard/members?notice=password")),
        Err(error) => {
            let errors = FieldErrors::from_api(error, &[("password", "password")])?;
            render(
                &state,
                &me,
                Outcome {
                    password: Some((member_id, errors)),
                    ..Outcome::default()
                },
            )
            .await
        }
    }
}

/// `POST /dashboard/members/{member_id}/remove`.
pub async fn remove(
    State(state): State<AppState>,
    Ids(member_id): Ids<String>,
    Posted { me, .. }: Posted<NoFields>,
) -> Result<Response, DashError> {
    me.require_owner()?;
    let outcome = match service::remove(&state, &me.caller(), &me.tenant_id, &member_id).await {
        Ok(_) => return Ok(page::see_other("/dashboard/members?notice=removed")),
        Err(error) => refusal(error)?,
    };
    render(&state, &me, outcome).await
}
