//! async-openai's `Client` with sturdy underneath, against an in-process
//! fault server: a chat completion that meets a 503 and a dropped
//! connection, a stream reset before its first token, and the report of
//! what the client saw. Runs with no arguments; nothing leaves the machine.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::traits::RequestOptionsBuilder;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use futures_util::StreamExt;
use sturdy::retry::Backoff;
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};

fn chat() -> Result<CreateChatCompletionRequest, Box<dyn std::error::Error>> {
    Ok(CreateChatCompletionRequestArgs::default()
        .model("sturdy-demo")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("say hello")
            .build()?
            .into()])
        .build()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = FaultServer::start().await?;

    // The whole sturdy stack under async-openai. Backoff in milliseconds
    // for the demo (the default is the guide's: 1 s, 2 s, 4 s ...).
    let service = sturdy_openai::SturdyService::builder()
        .stack(|s| {
            s.map_retry(|r| {
                r.backoff(Backoff::guide(
                    Duration::from_millis(20),
                    Duration::from_millis(20),
                ))
            })
        })
        .client(sturdy::client().no_proxy())
        .build()?;
    let report = service.recorder().clone();
    let config = OpenAIConfig::new()
        .with_api_base(format!("{}/v1", server.base_url()))
        .with_api_key("sk-demo");
    let client = Client::with_config(config).with_http_service(service);

    // A 503, then a connection closed before the answer, then the answer.
    let answer = client
        .chat()
        // The fault server's script for this call, attempt by attempt.
        .header(CALL_HEADER, "demo-chat")?
        .header(FAULT_HEADER, "503, close, 200")?
        .create(chat()?)
        .await?;
    let text = answer.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    println!("chat: {text:?}");

    // A stream reset before its first token is sent again; the caller sees
    // one clean stream.
    let mut stream = client
        .chat()
        .header(CALL_HEADER, "demo-stream")?
        .header(FAULT_HEADER, "reset;at=0, 200;chunks=5")?
        .create_stream(chat()?)
        .await?;
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        if let Some(t) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
            streamed.push_str(&t);
        }
    }
    println!("stream: {streamed:?}");

    println!("\n{}", sturdy::metrics::Report::new(&report.snapshot()));
    server.shutdown().await;
    Ok(())
}
