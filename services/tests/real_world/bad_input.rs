//! Client mistakes get a 4xx with a JSON error body, never a 500 or a panic.

use crate::cluster::Cluster;
use lastmile_platform::http::{CallPolicy, ErrorBody, HttpClient, Method};
use lastmile_services::ServiceName;
use std::time::Duration;

async fn send(client: &HttpClient, method: Method, path: &str, body: &str) -> (u16, ErrorBody) {
    let (status, bytes) =
        client.call_raw(method, path, Some(body.as_bytes().to_vec())).await.expect("the service answers");
    let error: ErrorBody = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: the error body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_input_gets_json_4xx() {
    let cluster = Cluster::start(&ServiceName::ALL, Duration::from_secs(60)).await;
    let policy = CallPolicy { attempts: 1, ..CallPolicy::default() };
    let user = HttpClient::new("user", &cluster.urls[&ServiceName::User], policy.clone());
    let trip = HttpClient::new("trip", &cluster.urls[&ServiceName::Trip], policy.clone());
    let location = HttpClient::new("location", &cluster.urls[&ServiceName::Location], policy);
    let api = cluster.client();
    lastmile_workload::wait::wait_until("services ready", Duration::from_secs(30), || async {
        api.all_ready().await.then_some(())
    })
    .await
    .unwrap();

    let (status, e) = send(&user, Method::POST, "/riders", "{\"rider_id\": ").await;
    assert_eq!((status, e.code.as_str()), (400, "malformed_json"));
    let (status, e) = send(&user, Method::POST, "/riders", "{\"rider_id\": 5}").await;
    assert_eq!((status, e.code.as_str()), (422, "invalid_body"));
    let (status, e) =
        send(&user, Method::POST, "/riders", "{\"rider_id\": \"r\", \"name\": \"R\", \"phone\": \"call me\"}").await;
    assert_eq!((status, e.code.as_str()), (422, "invalid_field"));
    let (status, e) = send(
        &trip,
        Method::POST,
        "/rides",
        "{\"ride_id\":\"x\",\"rider_id\":\"ghost\",\"station_id\":\"ST101\",\"destination\":\"Whitefield\"}",
    )
    .await;
    assert_eq!((status, e.code.as_str()), (404, "unknown_rider"));
    let (status, e) = send(
        &trip,
        Method::POST,
        "/rides",
        "{\"ride_id\":\"x\",\"rider_id\":\"ghost\",\"station_id\":\"ST999\",\"destination\":\"Whitefield\"}",
    )
    .await;
    assert_eq!((status, e.code.as_str()), (404, "unknown_station"));
    let (status, e) = send(
        &trip,
        Method::POST,
        "/rides",
        "{\"ride_id\":\"x\",\"rider_id\":\"ghost\",\"station_id\":\"ST101\",\"destination\":\"Whitefield\",\"max_wait_s\":-1}",
    )
    .await;
    assert_eq!((status, e.code.as_str()), (422, "invalid_max_wait"));
    let (status, e) = send(&location, Method::POST, "/drivers/ghost/location", "{\"lat\": 12.97, \"lng\": 77.6}").await;
    assert_eq!((status, e.code.as_str()), (404, "unknown_driver"));
    let (status, e) = send(&location, Method::POST, "/drivers/ghost/location", "{\"lat\": 123.0, \"lng\": 77.6}").await;
    assert_eq!((status, e.code.as_str()), (422, "invalid_coordinates"));
    let (status, e) = send(&trip, Method::GET, "/no/such/route", "").await;
    assert_eq!((status, e.code.as_str()), (404, "no_such_route"));
    let (status, e) = send(&trip, Method::POST, "/trips/nope/complete", "{}").await;
    assert_eq!((status, e.code.as_str()), (404, "unknown_trip"));
    // A rider registering as a driver's id is a conflict, not a crash.
    api.register_rider("r-1", "Rider", "+91 99000 00001").await.unwrap();
    let (status, e) = send(
        &user,
        Method::POST,
        "/riders",
        "{\"rider_id\": \"r-1\", \"name\": \"Other\", \"phone\": \"+91 99000 00001\"}",
    )
    .await;
    assert_eq!((status, e.code.as_str()), (409, "id_taken"));
    cluster.stop().await;
}
