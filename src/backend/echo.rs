//! The built-in DEMO agent: streams `echo: {content}` back, one word per delta.
//!
//! It exists so that a first run needs no other service, and so that tests of the
//! relay can run without a fake HTTP backend. It is labelled a demo in the config,
//! the start-up log and the README; it has no memory.

use std::time::Duration;

use futures_util::future::{self, LocalBoxFuture};
use futures_util::stream::{self, StreamExt};
use futures_util::FutureExt;

use super::{AgentBackend, AnswerPiece, DeltaStream, TurnRequest};
use crate::config::AgentSettings;

/// The echo agent; `delay` is the pause before each word.
pub struct EchoBackend {
    delay: Duration,
}

impl EchoBackend {
    pub fn new(settings: &AgentSettings) -> Self {
        EchoBackend { delay: Duration::from_millis(settings.echo_delay_ms) }
    }
}

impl AgentBackend for EchoBackend {
    fn stream_turn(&self, request: TurnRequest) -> DeltaStream {
        let delay = self.delay;
        let words = split_words(&format!("echo: {}", request.content));
        let pieces = words.into_iter().map(AnswerPiece::Text).chain([AnswerPiece::Finish("stop".into())]);
        stream::iter(pieces)
            .then(move |piece| async move {
                if !delay.is_zero() && matches!(piece, AnswerPiece::Text(_)) {
                    actix_rt::time::sleep(delay).await;
                }
                Ok(vec![piece])
            })
            .boxed_local()
    }

    fn wants_history(&self) -> bool {
        false
    }

    fn probe(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        future::ready(Ok(())).boxed_local()
    }
}

/// Splits text into words, each carrying the whitespace before it, so that the
/// pieces concatenate back to the exact text.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut start = 0;
    let mut previous_was_space = false;
    for (index, character) in text.char_indices() {
        let is_space = character.is_whitespace();
        if !is_space && previous_was_space && index > start {
            let word_start = text[start..index].trim_end().len() + start;
            if word_start > start {
                words.push(text[start..word_start].to_string());
                start = word_start;
            }
        }
        previous_was_space = is_space;
    }
    if start < text.len() {
        words.push(text[start..].to_string());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_concatenate_to_the_text() {
        for text in ["echo: Hello, how are you?", "echo:  two  spaces\nnew line ", "echo: x", "echo: 日本 語"] {
            let words = split_words(text);
            assert_eq!(words.concat(), text);
            assert!(words.iter().all(|word| !word.trim().is_empty()), "{words:?}");
        }
        assert_eq!(split_words("echo: Hello, you"), ["echo:", " Hello,", " you"]);
    }
}
