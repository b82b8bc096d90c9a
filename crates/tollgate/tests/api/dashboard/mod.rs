//! The dashboard, driven as a browser drives it: form posts with the page's CSRF token, cookies kept by hand,
//! redirects not followed (so each step's answer is seen). Folders mirror `tollgate-server/src/dashboard/`.

mod api;
mod keys;
mod login;
mod pages;

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode, redirect};
use serde_json::json;
use std::collections::BTreeMap;
use tollgate_testkit::{TestApp, TestTenant, json_of};

/// The password the tests give members.
pub const PASSWORD: &str = "correct horse battery";

/// A browser's view of the server: its cookies, and the last page's CSRF token.
pub struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// The `csrf` field of the last page read.
    pub csrf: String,
}

/// One answer: status, headers and body.
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect points.
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The `Set-Cookie` line for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// The value of the first `name="csrf" value="…"` on a page.
fn csrf_of(body: &str) -> Option<String> {
    let at = body.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    Some(body[at..].split('"').next()?.to_owned())
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            http: reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            csrf: String::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie = self.cookie_header();
        let request = if cookie.is_empty() {
            request
        } else {
            request.header(COOKIE, cookie)
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for line in headers.get_all(SET_COOKIE) {
            let line = line.to_str().unwrap();
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap();
        if let Some(csrf) = csrf_of(&body) {
            self.csrf = csrf;
        }
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.app.url));
        self.send(request).await
    }

    /// Posts `fields` as a form, with the last page's CSRF token unless `fields` names one.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            form.push(("csrf".to_owned(), self.csrf.clone()));
        }
        let body = serde_urlencoded::to_string(&form).unwrap();
        let request = self
            .http
            .request(Method::POST, format!("{}{path}", self.app.url))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// The `Cookie` header this browser sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }

    /// Signs in: the sign-in page, then its form.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let page = self.get("/dashboard/login").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        self.post(
            "/dashboard/login",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// Signs in and expects it to work.
    pub async fn signed_in(app: &'a TestApp, email: &str) -> Self {
        let mut browser = Self::new(app);
        let page = browser.sign_in(email, PASSWORD).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location(), "/dashboard");
        browser
    }
}

/// Sets the owner's dashboard password through the management API.
pub async fn owner_password(app: &TestApp, t: &TestTenant) {
    json_of(
        app.post(
            &format!("/v1/organization/members/{}", t.owner_id),
            &t.admin_key,
            &json!({"password": PASSWORD}),
        )
        .await,
        200,
    )
    .await;
}

/// Adds a member with `role` and the tests' password; returns its id.
pub async fn member(app: &TestApp, t: &TestTenant, email: &str, role: &str) -> String {
    let member = json_of(
        app.post(
            "/v1/organization/members",
            &t.admin_key,
            &json!({"email": email, "role": role, "password": PASSWORD}),
        )
        .await,
        201,
    )
    .await;
    member["id"].as_str().unwrap().to_owned()
}

/// The keys page of `t`'s Default project.
pub fn keys_path(t: &TestTenant) -> String {
    format!("/dashboard/projects/{}/keys", t.project_id)
}
