//! `edgeaictl chat`: one question (`--query`) or an interactive session over
//! the admin socket's chat-messages endpoint, streaming answer tokens to
//! stdout as they arrive and keeping the conversation between turns.
//!
//! Owns: the turn loop and what it prints. Must not: parse SSE (that is
//! `edgeai_common`) or choose exit codes.

use crate::commands::print;
use crate::error::CtlError;
use crate::paths;
use edgeai_common::dify::{ChatRequest, StreamEvent, RESPONSE_MODE_STREAMING};
use edgeai_common::{ClientError, UnixClient};
use std::io::{IsTerminal, Write};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Ends an interactive session, like end of input.
const EXIT_COMMAND: &str = "/exit";

pub struct Chat<'a> {
    pub client: &'a UnixClient,
    pub app: &'a str,
    pub user: String,
    /// The app's input form values, sent with each turn (a conversation
    /// keeps the ones it started with).
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Print every event's JSON on its own line instead of the answer text.
    pub json: bool,
}

/// `edgeaictl-$USER`, the end user of conversations started here.
pub fn default_user(login: Option<&str>) -> String {
    match login {
        Some(name) if !name.is_empty() => format!("edgeaictl-{name}"),
        _ => "edgeaictl".to_owned(),
    }
}

impl Chat<'_> {
    pub async fn one_question(&self, query: &str) -> Result<(), CtlError> {
        self.turn(query, None).await.map(drop)
    }

    /// Reads questions from stdin until EOF or `/exit`. A turn that fails on
    /// its own (an API error, a broken stream) is reported and the session
    /// goes on; the session then ends with [`CtlError::ChatTurnsFailed`].
    pub async fn interactive(&self) -> Result<(), CtlError> {
        let prompt = std::io::stdin().is_terminal();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut conversation: Option<String> = None;
        let (mut turns, mut failed) = (0, 0);
        loop {
            if prompt {
                eprint!("> ");
                // A prompt that cannot be shown does not stop the session.
                let _ = std::io::stderr().flush();
            }
            let Some(line) = lines.next_line().await.map_err(|source| CtlError::Stdin { source })? else {
                break;
            };
            let query = line.trim();
            if query == EXIT_COMMAND {
                break;
            }
            if query.is_empty() {
                continue;
            }
            turns += 1;
            match self.turn(query, conversation.clone()).await {
                // A completion app has no conversation ("" from the daemon).
                Ok(id) => conversation = Some(id).filter(|c| !c.is_empty()),
                Err(err) if err.is_turn_local() => {
                    failed += 1;
                    eprintln!("{}", err.report());
                }
                Err(err) => return Err(err),
            }
        }
        if failed > 0 {
            return Err(CtlError::ChatTurnsFailed { failed, turns });
        }
        Ok(())
    }

    /// Sends one question and streams its answer; returns the conversation id.
    async fn turn(&self, query: &str, conversation_id: Option<String>) -> Result<String, CtlError> {
        let request = ChatRequest {
            query: query.to_owned(),
            inputs: self.inputs.clone(),
            response_mode: RESPONSE_MODE_STREAMING.to_owned(),
            user: self.user.clone(),
            conversation_id,
        };
        let mut stream = self.client.post_stream(&paths::chat_messages(self.app), &request).await?;
        let mut answer_started = false;
        let mut result = Err(CtlError::StreamEnded { app: self.app.to_owned() });
        loop {
            let event = match stream.next_event().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(err) => {
                    result = Err(err.into());
                    break;
                }
            };
            if self.json {
                print(&format!("{}\n", event.data))?;
            }
            match event.event {
                StreamEvent::Message { answer, .. } => {
                    if !self.json && !answer.is_empty() {
                        print(&answer)?;
                        answer_started = true;
                    }
                }
                StreamEvent::MessageEnd { conversation_id, .. } => result = Ok(conversation_id),
                StreamEvent::Error { status, code, message } => {
                    result = Err(ClientError::Api { status, code, message }.into());
                    break;
                }
                StreamEvent::Ping | StreamEvent::Other => {}
            }
        }
        if answer_started {
            print("\n")?;
        }
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn default_user_uses_the_login_name() {
        assert_eq!(default_user(Some("ops")), "edgeaictl-ops");
        assert_eq!(default_user(Some("")), "edgeaictl");
        assert_eq!(default_user(None), "edgeaictl");
    }
}
