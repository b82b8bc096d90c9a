//! `GET /v1/organization`.

use tollgate_testkit::{TestApp, json_of};

#[tokio::test]
async fn an_admin_key_reads_its_own_tenant() {
    let app = TestApp::start().await;
    let t = app.tenant("enterprise").await;
    let org = json_of(app.get("/v1/organization", &t.admin_key).await, 200).await;
    assert_eq!(org["object"], "organization");
    assert_eq!(org["id"], t.id.as_str());
    assert_eq!(org["plan"], "enterprise");
    assert_eq!(org["status"], "active");
}
