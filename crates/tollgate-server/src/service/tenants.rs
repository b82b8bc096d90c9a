//! Creating tenants.

use crate::app::App;
use crate::error::ApiError;
use serde::Deserialize;
use tollgate_core::key::PlainKey;
use tollgate_core::password;
use tollgate_core::tenant::{NewTenant, normalize_email};

/// `POST /operator/v1/tenants` and `tollgate tenant create`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name.
    pub name: String,
    /// A plan the config defines.
    pub plan: String,
    /// The owner's email.
    pub owner_email: String,
    /// The owner's dashboard password.
    #[serde(default)]
    pub owner_password: Option<String>,
}

/// Validates and writes a tenant with its Default project, owner and the owner's admin key (whose secret is
/// returned this once).
pub async fn create(app: &App, input: CreateTenant) -> Result<(NewTenant, PlainKey), ApiError> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(ApiError::bad_request(
            "name must be 1 to 256 characters",
            Some("name"),
        ));
    }
    if !app.plans.contains_key(&input.plan) {
        let offered: Vec<&str> = app.plans.keys().map(String::as_str).collect();
        return Err(ApiError::bad_request(
            format!(
                "Unknown plan '{}'; this deployment offers: {}",
                truncate(&input.plan),
                offered.join(", ")
            ),
            Some("plan"),
        ));
    }
    let email = normalize_email(&input.owner_email).ok_or_else(|| {
        ApiError::bad_request(
            "owner_email is not a valid email address",
            Some("owner_email"),
        )
    })?;
    let password_hash = match input.owner_password {
        None => None,
        Some(pw) => Some(
            // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
            tokio::task::spawn_blocking(move || password::hash(&pw))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| ApiError::bad_request(e.to_string(), Some("owner_password")))?,
        ),
    };
    let (tenant, secret) = NewTenant::build(
        &app.prefixes,
        name.to_owned(),
        input.plan,
        email,
        password_hash,
        app.clock.now(),
    );
    app.store.create_tenant(&tenant).await?;
    Ok((tenant, secret))
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(at, _)| &s[..at])
}
