//! Running the `lastmile` binary from tests beside the fake API server.

#![allow(dead_code)] // each test binary uses part of it

use std::process::{Child, Output};
use std::time::Duration;

/// Wait for the child without blocking the runtime the fake API server runs on.
pub async fn finish(mut child: Child) -> Output {
    for _ in 0..1200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("lastmile did not finish within a minute: {:?}", child.wait_with_output().unwrap());
}

/// Everything the child printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
