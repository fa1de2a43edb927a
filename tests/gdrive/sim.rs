//! The Drive simulator follows the real API: token errors, list paging and fields, export
//! and download rules, the changes feed.

use std::collections::BTreeSet;

use pandora_sync::simulator::{
    DOC_MIME, GDriveSim, GDriveSimConfig, NewGDriveFile, ROOT_ID, SHEET_MIME,
};
use serde_json::Value;

async fn get(sim: &GDriveSim, token: &str, path: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

async fn refresh(sim: &GDriveSim, secret: &str, refresh: &str) -> (u16, Value) {
    let cfg = sim.config();
    let r = reqwest::Client::new()
        .post(format!("{}/token", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("client_id", &cfg.client_id)
                .append_pair("client_secret", secret)
                .append_pair("refresh_token", refresh)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn token_endpoint_refreshes_and_rejects() {
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    let cfg = sim.config().clone();
    let (s, b) = refresh(&sim, &cfg.client_secret, &cfg.refresh_token).await;
    assert_eq!(s, 200);
    assert_eq!(b["expires_in"], 3599);
    assert_eq!(b["token_type"], "Bearer");
    let (s, b) = refresh(&sim, "wrong", &cfg.refresh_token).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    sim.revoke_refresh_token();
    let (s, b) = refresh(&sim, &cfg.client_secret, &cfg.refresh_token).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(b["error_description"], "Token has been expired or revoked.");
    let (s, b) = get(&sim, "nope", "/drive/v3/files").await;
    assert_eq!(s, 401);
    assert_eq!(json(&b)["error"]["errors"][0]["reason"], "authError");
}

#[tokio::test]
async fn access_tokens_expire_after_their_requests() {
    let sim = GDriveSim::start(GDriveSimConfig {
        token_lifetime_requests: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = sim.config().clone();
    let (_, b) = refresh(&sim, &cfg.client_secret, &cfg.refresh_token).await;
    let t = b["access_token"].as_str().unwrap().to_owned();
    for expected in [200, 200, 401] {
        assert_eq!(
            get(&sim, &t, "/drive/v3/changes/startPageToken").await.0,
            expected
        );
    }
}

#[tokio::test]
async fn list_pages_fields_and_trash() {
    let sim = GDriveSim::start(GDriveSimConfig {
        short_pages: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let t = sim.config().static_access_token.clone();
    // Without fields: kind, id, name, mimeType only. Trashed files are listed by default.
    let (s, b) = get(&sim, &t, "/drive/v3/files?pageSize=1000").await;
    assert_eq!(s, 200);
    let files = json(&b)["files"].as_array().unwrap().clone();
    let keys: BTreeSet<&str> = files[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["kind", "id", "name", "mimeType"]));
    assert_eq!(get(&sim, &t, "/drive/v3/files?pageSize=1001").await.0, 400);
    assert_eq!(
        get(&sim, &t, "/drive/v3/files?q=name%20contains%20'x'")
            .await
            .0,
        400
    );
    assert_eq!(
        get(&sim, &t, "/drive/v3/files?pageToken=bogus").await.0,
        400
    );
    assert_eq!(
        get(&sim, &t, "/drive/v3/files?corpora=allDrives").await.0,
        400,
        "allDrives needs includeItemsFromAllDrives"
    );
    // Paging with partial and empty pages: only a missing nextPageToken ends the list.
    let mut seen = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut empty = 0;
    loop {
        let mut path = "/drive/v3/files?pageSize=5&q=trashed%20%3D%20false&fields=nextPageToken,files(id,trashed,owners(emailAddress))".to_owned();
        if let Some(t) = &token {
            path.push_str(&format!("&pageToken={t}"));
        }
        let (s, b) = get(&sim, &t, &path).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let v = json(&b);
        pages += 1;
        let files = v["files"].as_array().unwrap();
        if files.is_empty() {
            empty += 1;
        }
        for f in files {
            assert_eq!(f["trashed"], false);
            assert!(f.get("name").is_none(), "only the fields asked for");
            assert!(seen.insert(f["id"].as_str().unwrap().to_owned()));
        }
        match v["nextPageToken"].as_str() {
            Some(n) => token = Some(n.to_owned()),
            None => break,
        }
    }
    let live = sim
        .files()
        .iter()
        .filter(|f| !f.trashed && f.drive_id.is_none())
        .count();
    assert_eq!(seen.len(), live);
    assert!(
        empty >= 1 && pages > live / 5,
        "{pages} pages, {empty} empty"
    );
}

#[tokio::test]
async fn export_download_and_their_errors() {
    let sim = GDriveSim::start(GDriveSimConfig {
        oversize_docs: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let t = sim.config().static_access_token.clone();
    let files = sim.files();
    let doc = files
        .iter()
        .find(|f| f.mime_type == DOC_MIME && !f.oversize)
        .unwrap();
    let (s, b) = get(
        &sim,
        &t,
        &format!("/drive/v3/files/{}/export?mimeType=text/plain", doc.id),
    )
    .await;
    assert_eq!(s, 200);
    assert!(b.starts_with(b"\xEF\xBB\xBF"), "Docs exports carry a BOM");
    assert_eq!(&b[3..], doc.content.as_slice());
    let (s, b) = get(&sim, &t, &format!("/drive/v3/files/{}?alt=media", doc.id)).await;
    assert_eq!(s, 403);
    assert_eq!(
        json(&b)["error"]["errors"][0]["reason"],
        "fileNotDownloadable"
    );
    let huge = files.iter().find(|f| f.oversize).unwrap();
    let (s, b) = get(
        &sim,
        &t,
        &format!("/drive/v3/files/{}/export?mimeType=text/plain", huge.id),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        json(&b)["error"]["errors"][0]["reason"],
        "exportSizeLimitExceeded"
    );
    assert_eq!(
        json(&b)["error"]["message"],
        "This file is too large to be exported."
    );
    let sheet = files.iter().find(|f| f.mime_type == SHEET_MIME).unwrap();
    assert_eq!(
        get(
            &sim,
            &t,
            &format!("/drive/v3/files/{}/export?mimeType=text/plain", sheet.id)
        )
        .await
        .0,
        400
    );
    let pdf = files
        .iter()
        .find(|f| f.mime_type == "application/pdf")
        .unwrap();
    let (s, b) = get(&sim, &t, &format!("/drive/v3/files/{}?alt=media", pdf.id)).await;
    assert_eq!((s, b), (200, pdf.content.clone()));
}

#[tokio::test]
async fn changes_feed_pages_and_mutations() {
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    let t = sim.config().static_access_token.clone();
    let (_, b) = get(
        &sim,
        &t,
        "/drive/v3/changes/startPageToken?supportsAllDrives=true",
    )
    .await;
    let start = json(&b)["startPageToken"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&sim, &t, "/drive/v3/changes").await.0,
        400,
        "pageToken is required"
    );
    let (_, b) = get(&sim, &t, &format!("/drive/v3/changes?pageToken={start}")).await;
    let v = json(&b);
    assert_eq!(v["changes"].as_array().unwrap().len(), 0);
    assert_eq!(v["newStartPageToken"], start.as_str());

    let doc = sim
        .files()
        .into_iter()
        .find(|f| f.mime_type == DOC_MIME)
        .unwrap();
    let folder = sim.files().into_iter().find(|f| f.is_folder()).unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(sim.create(NewGDriveFile {
            name: format!("n{i}"),
            mime_type: "text/plain".into(),
            parent: Some(ROOT_ID.into()),
            content: b"x".to_vec(),
        }));
    }
    assert!(sim.rename(&doc.id, "renamed"));
    assert_eq!(sim.file(&doc.id).unwrap().modified_time, doc.modified_time);
    assert!(sim.trash(&folder.id));
    assert!(sim.delete(&ids[0]));
    // `fields=*` caps pages at 50; the last page alone has newStartPageToken.
    let (_, b) = get(
        &sim,
        &t,
        &format!("/drive/v3/changes?pageToken={start}&pageSize=1000&fields=*"),
    )
    .await;
    let v = json(&b);
    assert_eq!(v["changes"].as_array().unwrap().len(), 50);
    assert!(v.get("newStartPageToken").is_none());
    let next = v["nextPageToken"].as_str().unwrap().to_owned();
    let (_, b) = get(
        &sim,
        &t,
        &format!("/drive/v3/changes?pageToken={next}&pageSize=1000"),
    )
    .await;
    let v = json(&b);
    assert!(v["newStartPageToken"].is_string() && v.get("nextPageToken").is_none());
    let changes = v["changes"].as_array().unwrap();
    let removed = changes
        .iter()
        .find(|c| c["fileId"] == ids[0].as_str())
        .unwrap();
    assert_eq!(removed["removed"], true);
    assert!(removed.get("file").is_none());
    let trashed = changes
        .iter()
        .find(|c| c["fileId"] == folder.id.as_str())
        .unwrap();
    assert_eq!(trashed["file"]["trashed"], true);
    // The folder's contents are trashed with it.
    assert!(
        sim.files()
            .iter()
            .filter(|f| f.parents.contains(&folder.id))
            .all(|f| f.trashed)
    );
    assert!(sim.untrash(&folder.id));
    assert!(
        sim.files()
            .iter()
            .filter(|f| f.parents.contains(&folder.id))
            .any(|f| !f.trashed)
    );
}

#[tokio::test]
async fn rate_limit_faults_use_googles_bodies() {
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    let t = sim.config().static_access_token.clone();
    sim.burst_429(2);
    let (s1, b1) = get(&sim, &t, "/drive/v3/files").await;
    let (s2, b2) = get(&sim, &t, "/drive/v3/files").await;
    assert_eq!((s1, s2), (403, 429));
    assert_eq!(
        json(&b1)["error"]["errors"][0]["reason"],
        "userRateLimitExceeded"
    );
    assert_eq!(json(&b1)["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(
        json(&b2)["error"]["errors"][0]["reason"],
        "rateLimitExceeded"
    );
    assert_eq!(get(&sim, &t, "/drive/v3/files").await.0, 200);
}
