//! The example runs to completion against its in-process fault server and
//! reports the retries it made.

use std::process::Command;

#[test]
fn the_async_openai_example_recovers_and_reports() {
    // target/<profile>/deps/example-HASH -> target/<profile>/examples/async_openai
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop();
    path.pop();
    path.push("examples");
    path.push(format!("async_openai{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    let out = Command::new(&path).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("chat: \""), "{stdout}");
    assert!(stdout.contains("stream: \""), "{stdout}");
    // Three attempts for the chat, two for the stream.
    assert!(stdout.contains("attempts: 5 started"), "{stdout}");
}
