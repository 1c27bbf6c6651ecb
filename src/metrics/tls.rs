//! The TLS metric families: handshakes by listener, version and result, their duration, and
//! each certificate's expiry so Prometheus can alert before it; ACME orders by listener.

use super::LATENCY_BUCKETS;
use crate::certs::CertInfo;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub struct TlsMetrics {
    handshakes: IntCounterVec,
    handshake_duration: HistogramVec,
    certificate_expiry: IntGaugeVec,
}

/// One listener's handshake handles, resolved when its TLS settings are built.
#[derive(Clone)]
pub struct HandshakeMetrics {
    pub tls12: IntCounter,
    pub tls13: IntCounter,
    pub failed: IntCounter,
    pub timed_out: IntCounter,
    pub duration: Histogram,
}

impl TlsMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "gatehouse_tls_handshakes_total",
                "TLS handshakes on client connections, by listener, version (1.2, 1.3, unknown) and result (ok, error, timeout).",
            ),
            &["listener", "version", "result"],
        )?;
        let handshake_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_tls_handshake_duration_seconds",
                "Time from accepting a TLS connection to the end of its handshake, by listener.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["listener"],
        )?;
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "gatehouse_tls_certificate_expiry_timestamp_seconds",
                "When each listener certificate expires (Unix seconds), by listener and the certificate's first name.",
            ),
            &["listener", "name"],
        )?;
        registry.register(Box::new(handshakes.clone()))?;
        registry.register(Box::new(handshake_duration.clone()))?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        Ok(Self {
            handshakes,
            handshake_duration,
            certificate_expiry,
        })
    }

    pub fn handshakes(&self, listener: &str) -> HandshakeMetrics {
        let count = |version: &str, result: &str| {
            self.handshakes
                .with_label_values(&[listener, version, result])
        };
        HandshakeMetrics {
            tls12: count("1.2", "ok"),
            tls13: count("1.3", "ok"),
            failed: count("unknown", "error"),
            timed_out: count("unknown", "timeout"),
            duration: self.handshake_duration.with_label_values(&[listener]),
        }
    }

    /// Replaces the expiry series with those of the certificates in service.
    pub fn set_certificates<'a>(&self, certs: impl IntoIterator<Item = (&'a str, &'a CertInfo)>) {
        self.certificate_expiry.reset();
        for (listener, info) in certs {
            self.certificate_expiry
                .with_label_values(&[listener, info.primary_name()])
                .set(info.not_after);
        }
    }
}

/// ACME orders, by listener: started, and how each ended.
pub struct AcmeMetrics {
    orders: IntCounterVec,
}

/// One listener's ACME handles.
#[derive(Clone)]
pub struct AcmeOrderMetrics {
    pub started: IntCounter,
    pub succeeded: IntCounter,
    pub failed: IntCounter,
}

impl AcmeMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let orders = IntCounterVec::new(
            Opts::new(
                "gatehouse_acme_orders_total",
                "ACME certificate orders, by listener and result (started; then succeeded or failed).",
            ),
            &["listener", "result"],
        )?;
        registry.register(Box::new(orders.clone()))?;
        Ok(Self { orders })
    }

    pub fn listener(&self, listener: &str) -> AcmeOrderMetrics {
        let count = |result: &str| self.orders.with_label_values(&[listener, result]);
        AcmeOrderMetrics {
            started: count("started"),
            succeeded: count("succeeded"),
            failed: count("failed"),
        }
    }
}
