//! AWS KMS as a [`KeyWrapper`]: GenerateDataKey (AES_256) / Decrypt / ReEncrypt, with the version's
//! stored key id and the encryption context `{secret: <name>, version: <n>}`.
//!
//! The SDK's own retries are disabled so this module owns the retry budget: only retryable errors
//! (throttling, timeouts, 5xx, connection failures) are retried, with exponential backoff and full
//! jitter, each attempt bounded by a timeout. Exhausted retries become `WrapError::Unavailable`; a
//! refusal (bad context, disabled key, corrupted blob) is `WrapError::Rejected` at once.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use hyperion_vault_core::keywrap::{BoxFuture, EncryptionContext, KeyWrapper, NewDek, WrapError, WrappedDek};
use hyperion_vault_core::secret::{Dek, fill_random};

/// Retry budget of every KMS call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(max_delay, base * 2^retry)]`.
    fn backoff(&self, retry: u32) -> Duration {
        let cap = self.base_delay.saturating_mul(1u32 << retry.min(16)).min(self.max_delay);
        let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        if cap_us == 0 {
            return Duration::ZERO;
        }
        let mut buf = [0u8; 8];
        // Jitter is not security-relevant; without randomness, fall back to the full delay.
        if fill_random(&mut buf).is_err() {
            return cap;
        }
        Duration::from_micros(u64::from_le_bytes(buf) % (cap_us + 1))
    }

    /// Upper bound on the time one call can take, for tests and documentation.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.attempt_timeout.saturating_mul(self.max_retries + 1);
        let sleeps = (0..self.max_retries)
            .map(|r| self.base_delay.saturating_mul(1u32 << r.min(16)).min(self.max_delay))
            .fold(Duration::ZERO, |a, b| a.saturating_add(b));
        attempts.saturating_add(sleeps)
    }
}

/// The AWS SDK's HTTPS client on rustls + ring (the default client is compiled out, see
/// DEPENDENCIES.md §4.1).
pub fn ring_http_client() -> aws_sdk_kms::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// AWS KMS key wrapper.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_id: String,
    policy: RetryPolicy,
}

impl AwsKms {
    /// Region and credentials from the environment (env vars, IRSA, Pod Identity); `endpoint`
    /// overrides the service URL (moto in tests).
    pub async fn from_env(key_id: String, endpoint: Option<&str>, policy: RetryPolicy) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(ring_http_client())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(policy.attempt_timeout)
                    .operation_attempt_timeout(policy.attempt_timeout)
                    .build(),
            );
        if let Some(endpoint) = endpoint.filter(|e| !e.trim().is_empty()) {
            loader = loader.endpoint_url(endpoint);
        }
        let conf = loader.load().await;
        Self::new(aws_sdk_kms::Client::new(&conf), key_id, policy)
    }

    /// Wraps an already configured client (its own retries should be disabled).
    pub fn new(client: aws_sdk_kms::Client, key_id: String, policy: RetryPolicy) -> Self {
        Self { client, key_id, policy }
    }

    async fn call<T, E, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, WrapError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut retry = 0u32;
        loop {
            let failure = match tokio::time::timeout(self.policy.attempt_timeout, attempt()).await {
                Ok(Ok(out)) => return Ok(out),
                Ok(Err(err)) => match classify(&err) {
                    Class::Retryable => Box::new(err) as Box<dyn std::error::Error + Send + Sync>,
                    Class::Rejected => return Err(WrapError::Rejected(Box::new(err))),
                },
                Err(elapsed) => Box::new(elapsed) as Box<dyn std::error::Error + Send + Sync>,
            };
            if retry >= self.policy.max_retries {
                tracing::warn!(op, attempts = retry + 1, "KMS call failed within the retry budget");
                return Err(WrapError::Unavailable(failure));
            }
            let delay = self.policy.backoff(retry);
            tracing::debug!(op, retry, ?delay, error = %failure, "Retrying KMS call");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

enum Class {
    Retryable,
    Rejected,
}

fn classify<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Class {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Class::Retryable,
        SdkError::ResponseError(_) => Class::Retryable,
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("");
            let retryable_code = matches!(
                code,
                "ThrottlingException"
                    | "Throttling"
                    | "TooManyRequestsException"
                    | "LimitExceededException"
                    | "KMSInternalException"
                    | "KMSInternal"
                    | "DependencyTimeoutException"
                    | "KeyUnavailableException"
                    | "RequestTimeout"
                    | "ServiceUnavailable"
                    | "InternalFailure"
            );
            if retryable_code || status >= 500 || status == 429 { Class::Retryable } else { Class::Rejected }
        }
        _ => Class::Rejected,
    }
}

fn context_map(ctx: EncryptionContext<'_>) -> HashMap<String, String> {
    ctx.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl KeyWrapper for AwsKms {
    fn active_key_id(&self) -> &str {
        &self.key_id
    }

    fn generate_dek<'a>(&'a self, ctx: EncryptionContext<'a>) -> BoxFuture<'a, Result<NewDek, WrapError>> {
        Box::pin(async move {
            let context = context_map(ctx);
            let out = self
                .call("GenerateDataKey", || {
                    self.client
                        .generate_data_key()
                        .key_id(&self.key_id)
                        .key_spec(DataKeySpec::Aes256)
                        .set_encryption_context(Some(context.clone()))
                        .send()
                })
                .await?;
            let plaintext = out.plaintext().ok_or(WrapError::Malformed)?;
            let dek = Dek::from_slice(plaintext.as_ref()).map_err(|_| WrapError::Malformed)?;
            let blob = out.ciphertext_blob().ok_or(WrapError::Malformed)?.as_ref().to_vec();
            // Store the id KMS reports (an ARN even when configured with an alias), so Decrypt
            // names the exact key.
            let key_id = out.key_id().unwrap_or(&self.key_id).to_owned();
            Ok(NewDek { dek, wrapped: WrappedDek { key_id, blob } })
        })
    }

    fn unwrap_dek<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<Dek, WrapError>> {
        Box::pin(async move {
            let context = context_map(ctx);
            let out = self
                .call("Decrypt", || {
                    self.client
                        .decrypt()
                        .key_id(&wrapped.key_id)
                        .ciphertext_blob(Blob::new(wrapped.blob.clone()))
                        .set_encryption_context(Some(context.clone()))
                        .send()
                })
                .await?;
            let plaintext = out.plaintext().ok_or(WrapError::Malformed)?;
            Dek::from_slice(plaintext.as_ref()).map_err(|_| WrapError::Malformed)
        })
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<WrappedDek, WrapError>> {
        Box::pin(async move {
            let context = context_map(ctx);
            let out = self
                .call("ReEncrypt", || {
                    self.client
                        .re_encrypt()
                        .source_key_id(&wrapped.key_id)
                        .destination_key_id(&self.key_id)
                        .ciphertext_blob(Blob::new(wrapped.blob.clone()))
                        .set_source_encryption_context(Some(context.clone()))
                        .set_destination_encryption_context(Some(context.clone()))
                        .send()
                })
                .await?;
            let blob = out.ciphertext_blob().ok_or(WrapError::Malformed)?.as_ref().to_vec();
            let key_id = out.key_id().unwrap_or(&self.key_id).to_owned();
            Ok(WrappedDek { key_id, blob })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_the_cap() {
        let p = RetryPolicy::default();
        for retry in 0..20 {
            let d = p.backoff(retry);
            assert!(d <= p.max_delay && d <= p.base_delay * 2u32.pow(retry.min(16)));
        }
    }

    #[test]
    fn worst_case_adds_attempts_and_sleeps() {
        let p = RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(1),
        };
        assert_eq!(p.worst_case(), Duration::from_millis(3000 + 100 + 200));
    }
}
