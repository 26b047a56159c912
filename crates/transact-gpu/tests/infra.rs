//! The context, caches, pool and error paths.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{random, test_context};
use transact_gpu::context::Shader;
use transact_gpu::device::OPTIONAL_FEATURES;
use transact_gpu::kernels::gemm;
use transact_gpu::{AdapterRequest, GpuContext, GpuError, KernelSpec};

#[test]
fn context_describes_its_adapter() {
    let Some(ctx) = test_context() else { return };
    eprintln!(
        "adapter: {}; features {:?}; workgroup storage {} bytes",
        ctx.adapter_name(),
        ctx.features(),
        ctx.limits().max_compute_workgroup_storage_size
    );
    assert!(!ctx.adapter_info().name.is_empty());
    assert!(OPTIONAL_FEATURES.contains(ctx.features()));
    assert!(!ctx.is_lost());
}

#[test]
fn pipelines_are_built_once() {
    let Some(ctx) = test_context() else { return };
    let consts = [("TRANS_B", 1.0), ("RELU", 0.0), ("ACCUMULATE", 0.0)];
    let spec = KernelSpec::new(transact_gpu::kernels::GEMM, "gemm").constants(&consts);
    let a = ctx.kernel(&spec).unwrap();
    let b = ctx.kernel(&spec).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let other = [("TRANS_B", 0.0), ("RELU", 0.0), ("ACCUMULATE", 0.0)];
    let c = ctx.kernel(&spec.clone().constants(&other)).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
}

#[test]
fn steady_state_requests_reuse_pooled_buffers() {
    // A private context: the shared one's counter moves with other tests.
    let Some(_) = test_context() else { return };
    let ctx = GpuContext::new_from_env().unwrap();
    let a = random(40 * 24, 1.0, 1);
    let b = random(24 * 30, 1.0, 2);
    gemm(&ctx, 40, 30, 24, &a, &b, false, false).unwrap();
    let after_first = ctx.buffers_created();
    for _ in 0..5 {
        gemm(&ctx, 40, 30, 24, &a, &b, false, false).unwrap();
    }
    assert_eq!(ctx.buffers_created(), after_first);
}

#[test]
fn steady_state_requests_reuse_cached_bind_groups() {
    let Some(_) = test_context() else { return };
    let ctx = GpuContext::new_from_env().unwrap();
    let a = random(40 * 24, 1.0, 1);
    let b = random(24 * 30, 1.0, 2);
    let first = gemm(&ctx, 40, 30, 24, &a, &b, false, false).unwrap();
    let after_first = ctx.bind_groups_created();
    assert!(after_first > 0);
    for _ in 0..5 {
        // Same shapes: same pooled buffers, same bind groups, same result.
        assert_eq!(gemm(&ctx, 40, 30, 24, &a, &b, false, false).unwrap(), first);
    }
    assert_eq!(ctx.bind_groups_created(), after_first);
    // New data in the same buffers is read through the cached groups.
    let a2: Vec<f32> = a.iter().map(|v| v * 2.0).collect();
    let doubled = gemm(&ctx, 40, 30, 24, &a2, &b, false, false).unwrap();
    for (x, y) in doubled.iter().zip(&first) {
        assert!(
            (x - 2.0 * y).abs() <= 1e-4 * (1.0 + y.abs()),
            "{x} vs 2·{y}"
        );
    }
}

#[test]
fn unknown_adapter_name_lists_the_adapters_seen() {
    let Some(_) = test_context() else { return };
    let req = AdapterRequest {
        name_contains: Some("no-such-adapter-q7".into()),
        ..AdapterRequest::from_env()
    };
    match GpuContext::new(&req) {
        Err(e @ GpuError::NoAdapter { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no-such-adapter-q7"), "{msg}");
            if let GpuError::NoAdapter { adapters_seen, .. } = e {
                assert!(!adapters_seen.is_empty());
            }
        }
        other => panic!("expected NoAdapter, got {other:?}"),
    }
}

#[test]
fn a_broken_shader_is_an_error_not_a_panic() {
    let Some(ctx) = test_context() else { return };
    let bad = Shader {
        name: "broken",
        source: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
    };
    let r = ctx.kernel(&KernelSpec::new(bad, "main"));
    assert!(matches!(r, Err(GpuError::Pipeline { .. })), "{r:?}");
    let r = ctx.kernel(&KernelSpec::new(
        transact_gpu::kernels::GEMM,
        "no_such_entry",
    ));
    assert!(matches!(r, Err(GpuError::Pipeline { .. })), "{r:?}");
    // The context still works afterwards.
    assert!(gemm(&ctx, 1, 1, 1, &[2.0], &[3.0], false, false).unwrap() == vec![6.0]);
}

#[test]
fn f16_storage_needs_the_feature() {
    let Some(ctx) = test_context() else { return };
    let spec = KernelSpec::new(transact_gpu::kernels::GEMM, "gemm")
        .constants(&[("TRANS_B", 0.0), ("RELU", 0.0), ("ACCUMULATE", 0.0)])
        .storage(transact_gpu::Storage::F16);
    let r = ctx.kernel(&spec);
    assert_eq!(r.is_ok(), ctx.has_f16(), "{r:?}");
}
