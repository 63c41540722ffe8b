//! Instagram carousels, stories, reels, post options, processing errors and comments, end to
//! end over HTTP.

mod common;

use autopost_sandbox::SandboxOptions;
use common::{Reply, Running, ig_error, quick, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "igposts1";
const USER: &str = "17841400000000001";
const OTHER_USER: &str = "17841400000000222";

/// `POST /{user}/media` with a form body, as most clients send it.
async fn create_as(sandbox: &Running, user: &str, params: &[(&str, &str)]) -> Reply {
    let mut form = params.to_vec();
    form.push(("access_token", TOKEN));
    sandbox.send(sandbox.client.post(sandbox.ig(&format!("/{user}/media"))).form(&form)).await
}

async fn create(sandbox: &Running, params: &[(&str, &str)]) -> Reply {
    create_as(sandbox, USER, params).await
}

fn id(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["id"].as_str().expect("id").to_owned()
}

async fn image_child(sandbox: &Running, url: &str) -> String {
    id(&create(sandbox, &[("is_carousel_item", "true"), ("image_url", url)]).await)
}

async fn add_users(sandbox: &Running, usernames: &[&str]) {
    let reply = sandbox.post_json(&sandbox.url("/_sandbox/instagram/users"), json!({ "usernames": usernames })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

/// Publishes a finished container and returns the media id.
async fn publish(sandbox: &Running, container: &str) -> String {
    sandbox.ig_wait_finished(TOKEN, container).await;
    id(&sandbox.ig_publish(TOKEN, USER, container).await)
}

/// Asserts a `100` refusal without subcode whose message names `needle`.
fn refused(reply: &Reply, needle: &str) {
    let error = ig_error(reply, 100, None);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not named in {message:?}");
}

async fn quota_usage(sandbox: &Running) -> Value {
    let url = sandbox.ig(&format!("/{USER}/content_publishing_limit?fields=quota_usage&access_token={TOKEN}"));
    sandbox.get(&url).await.body["data"][0]["quota_usage"].clone()
}

#[tokio::test]
async fn a_carousel_of_three_is_published_once_with_its_children_in_order() {
    let sandbox = start(quick()).await;
    add_users(&sandbox, &["alice", "bob"]).await;
    let (first, video, third) = (sandbox.media("sample.jpg"), sandbox.media("sample.mp4"), "https://cdn.example.com/three.jpg".to_owned());
    let tags = r#"[{"username":"alice","x":0.25,"y":0.75}]"#;
    let child_params =
        [("is_carousel_item", "true"), ("image_url", &first), ("alt_text", "first"), ("user_tags", tags), ("caption", "ignored")];
    let child_one = id(&create(&sandbox, &child_params).await);
    let child_two = id(&create(&sandbox, &[("is_carousel_item", "true"), ("media_type", "VIDEO"), ("video_url", &video)]).await);
    let child_three = image_child(&sandbox, &third).await;
    let children = format!("{child_one},{child_two},{child_three}");
    let parent_params = [
        ("media_type", "CAROUSEL"),
        ("children", children.as_str()),
        ("caption", "Three in one"),
        ("collaborators", r#"["bob"]"#),
        ("location_id", "108424279189115"),
    ];

    // Children still processing: the parent is refused as not ready, and can be created later.
    let early = create(&sandbox, &parent_params).await;
    ig_error(&early, 9007, Some(2207027));
    for child in [&child_one, &child_two, &child_three] {
        sandbox.ig_wait_finished(TOKEN, child).await;
    }
    let parent = id(&create(&sandbox, &parent_params).await);
    assert_eq!(sandbox.ig_status(TOKEN, &parent).await, "IN_PROGRESS", "the parent processes like any container");

    let alone = sandbox.ig_publish(TOKEN, USER, &child_one).await;
    refused(&alone, "carousel item cannot be published on its own");
    let media_id = publish(&sandbox, &parent).await;
    refused(&sandbox.ig_publish(TOKEN, USER, &parent).await, "already been published");
    assert_eq!(sandbox.ig_status(TOKEN, &parent).await, "PUBLISHED");
    for child in [&child_one, &child_two, &child_three] {
        assert_eq!(sandbox.ig_status(TOKEN, child).await, "FINISHED");
    }

    let posts = sandbox.posts().await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert_eq!(post["platform_post_id"], media_id.as_str());
    assert_eq!(post["caption"], "Three in one");
    assert_eq!(post["media"], json!([first, video, third]));
    assert_eq!(
        post["options"],
        json!({
            "media_type": "CAROUSEL",
            "collaborators": ["bob"],
            "location_id": "108424279189115",
            "children": [
                { "media_type": "IMAGE", "media_url": first, "alt_text": "first", "user_tags": [{ "username": "alice", "x": 0.25, "y": 0.75 }] },
                { "media_type": "VIDEO", "media_url": video },
                { "media_type": "IMAGE", "media_url": third },
            ],
        })
    );
    assert_eq!(post["comments"], json!([]));
    assert_eq!(quota_usage(&sandbox).await, 1);

    // A child serves one carousel only, published or not.
    let fresh = image_child(&sandbox, &third).await;
    sandbox.ig_wait_finished(TOKEN, &fresh).await;
    let reuse = create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &format!("{fresh},{child_one}"))]).await;
    refused(&reuse, &format!("{child_one} is already part of another carousel"));
    refused(&sandbox.ig_publish(TOKEN, USER, &child_one).await, "carousel item");
}

#[tokio::test]
async fn carousel_children_are_checked() {
    let sandbox = start(SandboxOptions::instant()).await;
    let mut children = Vec::new();
    for _ in 0..11 {
        children.push(image_child(&sandbox, "https://cdn.example.com/c.jpg").await);
    }
    for count in [1, 11] {
        let reply = create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &children[..count].join(","))]).await;
        let error = ig_error(&reply, 100, Some(2207028));
        assert!(error["message"].as_str().is_some_and(|m| m.contains(&format!("children has {count}"))), "{error}");
    }
    refused(&create(&sandbox, &[("media_type", "CAROUSEL"), ("caption", "none")]).await, "children is required");
    let twice = format!("{},{}", children[0], children[0]);
    refused(&create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &twice)]).await, "listed twice");
    let unknown = format!("{},17900000000000000", children[0]);
    refused(&create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &unknown)]).await, "17900000000000000 is not a media container");
    let feed = id(&create(&sandbox, &[("image_url", "https://cdn.example.com/feed.jpg")]).await);
    let not_an_item = format!("{},{feed}", children[0]);
    refused(&create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &not_an_item)]).await, "is not a carousel item");
    let others =
        id(&create_as(&sandbox, OTHER_USER, &[("is_carousel_item", "true"), ("image_url", "https://cdn.example.com/o.jpg")]).await);
    let foreign = format!("{},{others}", children[0]);
    refused(&create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &foreign)]).await, "not a media container of this Instagram user");
    // Children take no feed-only options; a carousel takes no user tags of its own.
    let located =
        create(&sandbox, &[("is_carousel_item", "true"), ("image_url", "https://cdn.example.com/c.jpg"), ("location_id", "1")]).await;
    refused(&located, "location_id is not supported for carousel items");
    let tagged = create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &children[..2].join(",")), ("user_tags", "[]")]).await;
    refused(&tagged, "user_tags is not supported for CAROUSEL");
    refused(
        &create(&sandbox, &[("is_carousel_item", "true"), ("media_type", "REELS"), ("video_url", "https://cdn.example.com/v.mp4")]).await,
        "is_carousel_item",
    );
    ig_error(&create(&sandbox, &[("media_type", "VIDEO"), ("video_url", "https://cdn.example.com/v.mp4")]).await, 100, Some(2207023));
    ig_error(&create(&sandbox, &[("media_type", "GIF"), ("image_url", "https://cdn.example.com/g.gif")]).await, 100, Some(2207023));

    // JSON bodies may give children as an array; the refused attempts above reserved nothing.
    let body = json!({ "media_type": "CAROUSEL", "children": [children[0], children[1].parse::<u64>().expect("numeric id")], "access_token": TOKEN });
    let parent = id(&sandbox.post_json(&sandbox.ig(&format!("/{USER}/media")), body).await);
    publish(&sandbox, &parent).await;
    let posts = sandbox.posts().await;
    assert_eq!(posts[0]["media"], json!(["https://cdn.example.com/c.jpg", "https://cdn.example.com/c.jpg"]));
    assert_eq!(posts[0]["options"]["children"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn stories_of_images_and_videos_have_no_caption_collaborators_or_location() {
    let sandbox = start(SandboxOptions::instant()).await;
    add_users(&sandbox, &["alice"]).await;
    let image = sandbox.media("sample.jpg");
    let video = sandbox.media("sample.mp4");
    let image_story = id(&create(&sandbox, &[("media_type", "STORIES"), ("image_url", &image), ("caption", "not shown")]).await);
    publish(&sandbox, &image_story).await;
    // Since July 2025 stories take user tags, with an optional position.
    let video_story =
        create(&sandbox, &[("media_type", "stories"), ("video_url", &video), ("user_tags", r#"[{"username":"alice"}]"#)]).await;
    publish(&sandbox, &id(&video_story)).await;

    let posts = sandbox.posts().await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0]["caption"], "");
    assert_eq!(posts[0]["media"], json!([image]));
    assert_eq!(posts[0]["options"], json!({ "media_type": "STORIES" }));
    assert_eq!(posts[1]["media"], json!([video]));
    assert_eq!(posts[1]["options"], json!({ "media_type": "STORIES", "user_tags": [{ "username": "alice" }] }));

    let s = &sandbox;
    let story = |extra: (&'static str, &'static str)| {
        let image = image.clone();
        async move { create(s, &[("media_type", "STORIES"), ("image_url", &image), extra]).await }
    };
    refused(&story(("collaborators", "alice")).await, "collaborators is not supported for STORIES");
    refused(&story(("location_id", "108424279189115")).await, "location_id is not supported for STORIES");
    refused(&story(("alt_text", "a story")).await, "alt_text is not supported for STORIES");
    refused(&story(("video_url", "https://cdn.example.com/v.mp4")).await, "either image_url or video_url");
    refused(&create(&sandbox, &[("media_type", "STORIES")]).await, "image_url or video_url");
    ig_error(&create(&sandbox, &[("media_type", "STORIES"), ("image_url", &sandbox.media("sample.png"))]).await, 36001, Some(2207005));
    ig_error(&create(&sandbox, &[("media_type", "STORIES"), ("video_url", &image)]).await, 352, Some(2207026));
}

#[tokio::test]
async fn a_reel_is_published_with_its_cover_audio_thumbnail_and_feed_choice() {
    let sandbox = start(SandboxOptions::instant()).await;
    add_users(&sandbox, &["carol"]).await;
    let video = sandbox.media("sample.mp4");
    let cover = sandbox.media("sample.jpg");
    let s = &sandbox;
    let reel = |extra: Vec<(&'static str, String)>| {
        let mut params = vec![("media_type", "REELS".to_owned()), ("video_url", video.clone())];
        params.extend(extra);
        async move {
            let params: Vec<(&str, &str)> = params.iter().map(|(name, value)| (*name, value.as_str())).collect();
            create(s, &params).await
        }
    };
    let created = reel(vec![
        ("caption", "A reel".into()),
        ("share_to_feed", "false".into()),
        ("cover_url", cover.clone()),
        ("thumb_offset", "1500".into()),
        ("audio_name", "Original sound".into()),
        ("user_tags", r#"[{"username":"carol"}]"#.into()),
        ("collaborators", "carol".into()),
        ("location_id", "108424279189115".into()),
    ])
    .await;
    publish(&sandbox, &id(&created)).await;
    let posts = sandbox.posts().await;
    assert_eq!(posts[0]["caption"], "A reel");
    assert_eq!(posts[0]["media"], json!([video]));
    assert_eq!(
        posts[0]["options"],
        json!({
            "media_type": "REELS",
            "share_to_feed": false,
            "cover_url": cover,
            "thumb_offset": 1500,
            "audio_name": "Original sound",
            "user_tags": [{ "username": "carol" }],
            "collaborators": ["carol"],
            "location_id": "108424279189115",
        })
    );

    // JSON bodies carry booleans and numbers as such.
    let body = json!({ "media_type": "REELS", "video_url": video, "share_to_feed": true, "thumb_offset": 0, "access_token": TOKEN });
    publish(&sandbox, &id(&sandbox.post_json(&sandbox.ig(&format!("/{USER}/media")), body).await)).await;
    assert_eq!(sandbox.posts().await[1]["options"], json!({ "media_type": "REELS", "share_to_feed": true, "thumb_offset": 0 }));

    ig_error(&reel(vec![("cover_url", sandbox.media("sample.png"))]).await, 36001, Some(2207005));
    ig_error(&reel(vec![("cover_url", sandbox.media("missing.jpg"))]).await, 9004, Some(2207052));
    refused(&reel(vec![("thumb_offset", "-1".into())]).await, "thumb_offset");
    refused(&reel(vec![("thumb_offset", "1.5".into())]).await, "thumb_offset");
    refused(&reel(vec![("share_to_feed", "maybe".into())]).await, "share_to_feed");
    refused(
        &reel(vec![("user_tags", r#"[{"username":"carol","x":0.5,"y":0.5}]"#.into())]).await,
        "user_tags[0]['x'] is not supported for videos",
    );
    refused(&reel(vec![("alt_text", "no".into())]).await, "alt_text is not supported for REELS");
    let image = sandbox.media("sample.jpg");
    for reel_only in ["share_to_feed", "cover_url", "thumb_offset", "audio_name"] {
        let value = if reel_only == "cover_url" { image.as_str() } else { "1" };
        refused(&create(&sandbox, &[("image_url", &image), (reel_only, value)]).await, &format!("{reel_only} is not supported for IMAGE"));
    }
}

#[tokio::test]
async fn feed_image_options_are_shown_and_checked() {
    let sandbox = start(SandboxOptions::instant()).await;
    add_users(&sandbox, &["alice", "Bob.Smith", "carol", "dave"]).await;
    let image = sandbox.media("sample.jpg");
    let tags = r#"[{"username":"alice","x":0,"y":1},{"username":"bob.smith","x":0.5,"y":0.5}]"#;
    let params = [("image_url", image.as_str()), ("caption", "tagged"), ("alt_text", "Two people on a beach"), ("user_tags", tags)];
    publish(&sandbox, &id(&create(&sandbox, &params).await)).await;
    let posts = sandbox.posts().await;
    assert_eq!(
        posts[0]["options"],
        json!({
            "media_type": "IMAGE",
            "alt_text": "Two people on a beach",
            "user_tags": [{ "username": "alice", "x": 0, "y": 1 }, { "username": "bob.smith", "x": 0.5, "y": 0.5 }],
        })
    );

    let s = &sandbox;
    let with = |name: &'static str, value: String| {
        let image = image.clone();
        async move { create(s, &[("image_url", image.as_str()), (name, value.as_str())]).await }
    };
    refused(&with("alt_text", "a".repeat(1001)).await, "alt_text must be at most 1000 characters");
    assert_eq!(with("alt_text", "a".repeat(1000)).await.status, StatusCode::OK);
    refused(&with("user_tags", r#"[{"username":"alice","x":1.5,"y":0.5}]"#.into()).await, "user_tags[0]['x'] must be a number from 0 to 1");
    refused(&with("user_tags", r#"[{"username":"alice","x":"0.5","y":0.5}]"#.into()).await, "user_tags[0]['x']");
    refused(&with("user_tags", r#"[{"username":"alice","x":0.5}]"#.into()).await, "user_tags[0]['y'] is required for images");
    refused(&with("user_tags", "alice".into()).await, "user_tags must be a JSON array");
    refused(&with("user_tags", r#"{"username":"alice"}"#.into()).await, "user_tags must be a JSON array");
    let many: Vec<Value> = (0..21).map(|_| json!({ "username": "alice", "x": 0.1, "y": 0.1 })).collect();
    let error = ig_error(&with("user_tags", json!(many).to_string()).await, 100, Some(2207040));
    assert!(error["message"].as_str().is_some_and(|m| m.contains("user_tags")), "{error}");
    refused(
        &with("user_tags", r#"[{"username":"nobody_here","x":0.5,"y":0.5}]"#.into()).await,
        "@nobody_here cannot be tagged (user_tags)",
    );
    refused(&with("user_tags", r#"[{"username":"@alice","x":0.5,"y":0.5}]"#.into()).await, "is not an Instagram username");
    refused(&with("collaborators", r#"["alice","carol","dave","bob.smith"]"#.into()).await, "at most 3 collaborators");
    refused(&with("collaborators", "alice,carol,dave,bob.smith".into()).await, "at most 3 collaborators");
    assert_eq!(with("collaborators", "alice, carol,dave".into()).await.status, StatusCode::OK);
    refused(&with("collaborators", "alice,stranger".into()).await, "@stranger cannot be invited as a collaborator (collaborators)");
    refused(&with("collaborators", r#"["alice", 3]"#.into()).await, "collaborators must be a JSON array");
    refused(&with("location_id", "paris".into()).await, "location_id");

    // Every sandbox account has its username; tags of users the sandbox does not know are refused.
    let other_username = "sandbox_user_000222";
    let tag_other = format!(r#"[{{"username":"{other_username}","x":0.5,"y":0.5}}]"#);
    refused(&with("user_tags", tag_other.clone()).await, "cannot be tagged");
    let account =
        sandbox.post_json(&sandbox.url("/_sandbox/accounts"), json!({ "channel": "instagram", "platform_user_id": OTHER_USER })).await;
    assert_eq!(account.status, StatusCode::OK, "{:?}", account.body);
    let user_node = sandbox.get(&sandbox.ig(&format!("/{OTHER_USER}?fields=username&access_token=other-token"))).await;
    assert_eq!(user_node.body["username"], other_username);
    assert_eq!(with("user_tags", tag_other).await.status, StatusCode::OK);

    let bad = sandbox.post_json(&sandbox.url("/_sandbox/instagram/users"), json!({ "usernames": ["ok", "not ok"] })).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"].as_str().is_some_and(|e| e.starts_with("usernames:")), "{:?}", bad.body);
    assert_eq!(sandbox.post_json(&sandbox.url("/_sandbox/reset"), json!({})).await.status, StatusCode::OK);
    refused(&with("collaborators", "alice".into()).await, "@alice cannot be invited");
}

#[tokio::test]
async fn a_processing_error_fails_the_child_and_refuses_its_carousel() {
    let sandbox = start(SandboxOptions::instant()).await;
    let control = sandbox.url("/_sandbox/instagram/processing-errors");
    for bad in [json!({ "media_url_contains": "" }), json!({ "url": "x" })] {
        assert_eq!(sandbox.post_json(&control, bad).await.status, StatusCode::BAD_REQUEST);
    }
    let good = image_child(&sandbox, "https://cdn.example.com/good.jpg").await;
    assert_eq!(sandbox.post_json(&control, json!({ "media_url_contains": "broken" })).await.status, StatusCode::OK);
    let broken = image_child(&sandbox, "https://cdn.example.com/broken.jpg").await;
    let status = sandbox.get(&sandbox.ig(&format!("/{broken}?fields=status_code,status&access_token={TOKEN}"))).await;
    assert_eq!(status.body["status_code"], "ERROR");
    assert_eq!(status.body["status"], "Error: Media upload has failed with error code 2207052");
    assert_eq!(sandbox.ig_status(TOKEN, &good).await, "FINISHED", "containers created before the fault are unaffected");

    let parent = create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &format!("{good},{broken}"))]).await;
    refused(&parent, &format!("the carousel item {broken} failed processing (status_code ERROR)"));

    let video = create(&sandbox, &[("media_type", "REELS"), ("video_url", "https://cdn.example.com/broken.mp4")]).await;
    let video = id(&video);
    let status = sandbox.get(&sandbox.ig(&format!("/{video}?fields=status_code,status&access_token={TOKEN}"))).await;
    assert_eq!(status.body["status"], "Error: Media upload has failed with error code 2207026");
    refused(&sandbox.ig_publish(TOKEN, USER, &video).await, "failed processing");
    assert!(sandbox.posts().await.is_empty());

    assert_eq!(sandbox.post_json(&sandbox.url("/_sandbox/reset"), json!({})).await.status, StatusCode::OK);
    let healed = image_child(&sandbox, "https://cdn.example.com/broken.jpg").await;
    assert_eq!(sandbox.ig_status(TOKEN, &healed).await, "FINISHED", "reset clears processing errors");
}

#[tokio::test]
async fn comments_are_posted_by_the_owner_and_listed_newest_first() {
    let sandbox = start(SandboxOptions::instant()).await;
    let container = id(&create(&sandbox, &[("image_url", "https://cdn.example.com/a.jpg"), ("caption", "commented")]).await);
    let media = publish(&sandbox, &container).await;
    let comments = sandbox.ig(&format!("/{media}/comments"));
    let s = &sandbox;
    let comment = |token: &'static str, message: String| {
        let request = s.client.post(&comments).form(&[("message", message.as_str()), ("access_token", token)]);
        async move { s.send(request).await }
    };

    let first = id(&comment(TOKEN, "first!".into()).await);
    let second = id(&comment(TOKEN, "#second".into()).await);
    let listed = sandbox.get(&format!("{comments}?fields=id,text&access_token={TOKEN}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert_eq!(listed.body, json!({ "data": [{ "id": second, "text": "#second" }, { "id": first, "text": "first!" }] }));
    let defaults = sandbox.get(&format!("{comments}?access_token={TOKEN}")).await;
    assert!(defaults.body["data"][0]["timestamp"].as_str().is_some_and(|t| t.ends_with("+0000")), "{:?}", defaults.body);
    let posts = sandbox.posts().await;
    assert_eq!(posts[0]["comments"], json!([{ "id": first, "text": "first!" }, { "id": second, "text": "#second" }]));

    refused(&comment(TOKEN, String::new()).await, "message is required");
    refused(&comment(TOKEN, "x".repeat(2201)).await, "message must be at most 2200 characters");
    assert_eq!(comment(TOKEN, "x".repeat(2200)).await.status, StatusCode::OK);
    let unknown = sandbox
        .send(sandbox.client.post(sandbox.ig("/17959999999999999/comments")).form(&[("message", "hi"), ("access_token", TOKEN)]))
        .await;
    ig_error(&unknown, 100, Some(33));
    let unknown_list = sandbox.get(&sandbox.ig(&format!("/17959999999999999/comments?access_token={TOKEN}"))).await;
    ig_error(&unknown_list, 100, Some(33));

    // Another user's token sees no such media.
    let account =
        sandbox.post_json(&sandbox.url("/_sandbox/accounts"), json!({ "channel": "instagram", "platform_user_id": OTHER_USER })).await;
    let other_token = account.body["access_token"].as_str().expect("token").to_owned();
    let foreign = sandbox.send(sandbox.client.post(&comments).bearer_auth(&other_token).form(&[("message", "hi")])).await;
    ig_error(&foreign, 100, Some(33));
    ig_error(&sandbox.send(sandbox.client.get(&comments).bearer_auth(&other_token)).await, 100, Some(33));

    // Comment calls can be faulted; a lost answer still made the comment, as the listing shows.
    sandbox.fault(json!({ "endpoint": "instagram.comment_create", "status": 500 })).await;
    let failed = comment(TOKEN, "not made".into()).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body["error"]["code"], 1);
    sandbox.fault(json!({ "endpoint": "instagram.comment_create", "status": 500, "after_accept": true })).await;
    assert_eq!(comment(TOKEN, "made, answer lost".into()).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    sandbox.fault(json!({ "endpoint": "instagram.comment_list", "status": 503 })).await;
    assert_eq!(sandbox.get(&format!("{comments}?fields=text&access_token={TOKEN}")).await.status, StatusCode::SERVICE_UNAVAILABLE);
    let listed = sandbox.get(&format!("{comments}?fields=text&access_token={TOKEN}")).await;
    assert_eq!(listed.body["data"][0]["text"], "made, answer lost");
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(4));
    assert_eq!(sandbox.calls("instagram.comment_create").await, 9);
    assert_eq!(sandbox.calls("instagram.comment_list").await, 6);
}

#[tokio::test]
async fn a_carousel_counts_once_against_the_publishing_quota() {
    let options = SandboxOptions { instagram_quota_total: 1, ..SandboxOptions::instant() };
    let sandbox = start(options).await;
    let one = image_child(&sandbox, "https://cdn.example.com/1.jpg").await;
    let two = image_child(&sandbox, "https://cdn.example.com/2.jpg").await;
    let parent = id(&create(&sandbox, &[("media_type", "CAROUSEL"), ("children", &format!("{one},{two}"))]).await);
    publish(&sandbox, &parent).await;
    assert_eq!(quota_usage(&sandbox).await, 1);
    let single = id(&create(&sandbox, &[("image_url", "https://cdn.example.com/3.jpg")]).await);
    ig_error(&sandbox.ig_publish(TOKEN, USER, &single).await, 9, Some(2207042));
    assert_eq!(sandbox.posts().await.len(), 1);
}
