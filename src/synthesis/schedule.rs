//! The cosine noise schedule, the ancestral reverse step and RePaint's jump
//! time list (spec: `shared/reference/diffusion.md`, "Noise schedule",
//! "Reverse step", "RePaint inpainting with the jump schedule").

use crate::backend::desc::{AncestralStep, KnownBlend};
use crate::{Error, Result};

/// Diffusion steps of CLAIM and LeFusion (`timesteps: 300`).
pub const TIMESTEPS: usize = 300;

/// Offset `s` of the cosine schedule.
const COSINE_OFFSET: f64 = 0.008;

/// Largest β the schedule allows.
const MAX_BETA: f64 = 0.9999;

/// The per-step buffers of a cosine schedule, computed in f64 and stored as
/// f32 like the upstream PyTorch buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// β_t.
    pub betas: Vec<f32>,
    /// ᾱ_t = Π α.
    pub alphas_cumprod: Vec<f32>,
    /// √ᾱ_t.
    pub sqrt_alphas_cumprod: Vec<f32>,
    /// √(1 − ᾱ_t).
    pub sqrt_one_minus_alphas_cumprod: Vec<f32>,
    /// √(1/ᾱ_t).
    pub sqrt_recip_alphas_cumprod: Vec<f32>,
    /// √(1/ᾱ_t − 1).
    pub sqrt_recipm1_alphas_cumprod: Vec<f32>,
    /// log of the posterior variance, clipped below at 1e-20.
    pub posterior_log_variance_clipped: Vec<f32>,
    /// Posterior mean coefficient of x̂_0.
    pub posterior_mean_coef1: Vec<f32>,
    /// Posterior mean coefficient of x_t.
    pub posterior_mean_coef2: Vec<f32>,
    /// √β_t (jump back up).
    pub sqrt_betas: Vec<f32>,
    /// √(1 − β_t) (jump back up).
    pub sqrt_one_minus_betas: Vec<f32>,
}

impl Schedule {
    /// The cosine schedule with `steps` steps (CLAIM: [`TIMESTEPS`]).
    pub fn cosine(steps: usize) -> Result<Schedule> {
        if steps == 0 || steps > 100_000 {
            return Err(Error::invalid(format!(
                "diffusion schedule: steps must be 1–100000, got {steps}"
            )));
        }
        let t_total = steps as f64;
        let alpha_bar = |x: f64| {
            let a = ((x / t_total + COSINE_OFFSET) / (1.0 + COSINE_OFFSET)
                * std::f64::consts::FRAC_PI_2)
                .cos();
            a * a
        };
        let a0 = alpha_bar(0.0);
        let betas: Vec<f64> = (0..steps)
            .map(|t| {
                let ratio = (alpha_bar(t as f64 + 1.0) / a0) / (alpha_bar(t as f64) / a0);
                (1.0 - ratio).clamp(0.0, MAX_BETA)
            })
            .collect();
        let mut cumprod = Vec::with_capacity(steps);
        let mut acc = 1.0f64;
        for b in &betas {
            acc *= 1.0 - b;
            cumprod.push(acc);
        }
        let prev = |t: usize| if t == 0 { 1.0 } else { cumprod[t - 1] };
        let f32s = |f: &dyn Fn(usize) -> f64| (0..steps).map(|t| f(t) as f32).collect::<Vec<_>>();
        Ok(Schedule {
            betas: f32s(&|t| betas[t]),
            alphas_cumprod: f32s(&|t| cumprod[t]),
            sqrt_alphas_cumprod: f32s(&|t| cumprod[t].sqrt()),
            sqrt_one_minus_alphas_cumprod: f32s(&|t| (1.0 - cumprod[t]).sqrt()),
            sqrt_recip_alphas_cumprod: f32s(&|t| (1.0 / cumprod[t]).sqrt()),
            sqrt_recipm1_alphas_cumprod: f32s(&|t| (1.0 / cumprod[t] - 1.0).sqrt()),
            posterior_log_variance_clipped: f32s(&|t| {
                (betas[t] * (1.0 - prev(t)) / (1.0 - cumprod[t]))
                    .max(1e-20)
                    .ln()
            }),
            posterior_mean_coef1: f32s(&|t| betas[t] * prev(t).sqrt() / (1.0 - cumprod[t])),
            posterior_mean_coef2: f32s(&|t| {
                (1.0 - prev(t)) * (1.0 - betas[t]).sqrt() / (1.0 - cumprod[t])
            }),
            sqrt_betas: f32s(&|t| betas[t].sqrt()),
            sqrt_one_minus_betas: f32s(&|t| (1.0 - betas[t]).sqrt()),
        })
    }

    /// Number of steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Whether the schedule has no step (never true for a built schedule).
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    fn check_t(&self, t: usize) -> Result<()> {
        if t >= self.len() {
            return Err(Error::invalid(format!(
                "timestep {t} outside the schedule's 0..{}",
                self.len()
            )));
        }
        Ok(())
    }

    /// The known-region blend at `t` (see [`KnownBlend`]).
    pub fn known_blend(&self, t: usize) -> Result<KnownBlend> {
        self.check_t(t)?;
        Ok(KnownBlend {
            sqrt_alpha_bar: self.sqrt_alphas_cumprod[t],
            sqrt_one_minus_alpha_bar: self.sqrt_one_minus_alphas_cumprod[t],
        })
    }

    /// The ancestral reverse step at `t`: `x̂_0 = clip(√(1/ᾱ_t) x −
    /// √(1/ᾱ_t − 1) ε̂)`, `μ = c1 x̂_0 + c2 x`, `x ← μ + [t > 0]·exp(½ log
    /// σ²_t)·z` (see [`AncestralStep`]).
    pub fn ancestral_step(&self, t: usize) -> Result<AncestralStep> {
        self.check_t(t)?;
        Ok(AncestralStep {
            sqrt_recip_alpha_bar: self.sqrt_recip_alphas_cumprod[t],
            sqrt_recip_m1_alpha_bar: self.sqrt_recipm1_alphas_cumprod[t],
            coef_x0: self.posterior_mean_coef1[t],
            coef_xt: self.posterior_mean_coef2[t],
            sigma: if t > 0 {
                (0.5 * self.posterior_log_variance_clipped[t]).exp()
            } else {
                0.0
            },
        })
    }

    /// The jump back up from `t_last` to `t_last + 1` as the factors
    /// `(√(1−β), √β)` of `x = √(1−β_{t_last+1}) x + √β_{t_last+1} z`.
    pub fn jump_up(&self, t_last: usize) -> Result<(f32, f32)> {
        let t = t_last + 1;
        self.check_t(t)?;
        Ok((self.sqrt_one_minus_betas[t], self.sqrt_betas[t]))
    }
}

/// RePaint's jump parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JumpParams {
    /// Starting timestep t_T (1 ≤ t_T ≤ T; CLAIM: 300).
    pub t_start: usize,
    /// Steps gone back up per jump, L (CLAIM inference: 5).
    pub jump_length: usize,
    /// Times each jump point is visited, R (CLAIM inference: 5).
    pub jump_n_sample: usize,
}

impl Default for JumpParams {
    fn default() -> Self {
        JumpParams {
            t_start: TIMESTEPS,
            jump_length: 5,
            jump_n_sample: 5,
        }
    }
}

/// The most entries a time list may have (guards absurd R and L).
const MAX_SCHEDULE_LEN: usize = 10_000_000;

/// RePaint's time list for `params` (spec: `get_schedule_jump` with
/// `n_sample = 1`): descends from t_T, going back up `jump_length` steps
/// `jump_n_sample − 1` times at every `jump_length`-th timestep below
/// `t_T − jump_length`, and ends with −1. Consecutive pairs drive the
/// sampler: down = a network step at the first, up = re-noising.
pub fn jump_schedule(params: JumpParams) -> Result<Vec<i64>> {
    let JumpParams {
        t_start,
        jump_length,
        jump_n_sample,
    } = params;
    if t_start == 0 || t_start > 100_000 || jump_length == 0 || jump_n_sample == 0 {
        return Err(Error::invalid(format!(
            "RePaint: need t_start 1–100000, jump_length ≥ 1, jump_n_sample ≥ 1; got {t_start}, \
             {jump_length}, {jump_n_sample}"
        )));
    }
    let expected = evaluation_count(params)?;
    let ups = expected - t_start;
    let len = expected + ups + 1;
    if len > MAX_SCHEDULE_LEN {
        return Err(Error::invalid(format!(
            "RePaint: {expected} network evaluations (t_start {t_start}, jump_length \
             {jump_length}, jump_n_sample {jump_n_sample}) is more than this library runs"
        )));
    }
    // jumps[j] = R − 1 for j = 0, L, 2L, … < t_T − L.
    let mut jumps = vec![0usize; t_start];
    let mut j = 0;
    while j + jump_length < t_start {
        jumps[j] = jump_n_sample - 1;
        j += jump_length;
    }
    let mut times = Vec::with_capacity(len);
    let mut t = t_start;
    while t >= 1 {
        t -= 1;
        times.push(t as i64);
        if jumps[t] > 0 {
            jumps[t] -= 1;
            for _ in 0..jump_length {
                t += 1;
                times.push(t as i64);
            }
        }
    }
    times.push(-1);
    Ok(times)
}

/// Number of network steps (descending pairs) of the time list, computed
/// without building it: `t_T + (#jump points)·(R − 1)·L`. CLAIM's defaults
/// 300/5/5 give 1480.
pub fn evaluation_count(params: JumpParams) -> Result<usize> {
    let JumpParams {
        t_start,
        jump_length,
        jump_n_sample,
    } = params;
    if jump_length == 0 || jump_n_sample == 0 {
        return Err(Error::invalid(
            "RePaint: jump_length and jump_n_sample must be ≥ 1",
        ));
    }
    // j = 0, L, 2L, … with j + L < t_T.
    let points = if t_start > jump_length {
        (t_start - jump_length - 1) / jump_length + 1
    } else {
        0
    };
    points
        .checked_mul(jump_n_sample - 1)
        .and_then(|n| n.checked_mul(jump_length))
        .and_then(|n| n.checked_add(t_start))
        .ok_or_else(|| Error::invalid("RePaint: the jump schedule is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_down(times: &[i64]) -> usize {
        times.windows(2).filter(|w| w[1] < w[0]).count()
    }

    #[test]
    fn counts_match_the_spec() {
        for (l, r, want) in [(1, 1, 300), (2, 2, 598), (5, 5, 1480), (10, 10, 2910)] {
            let p = JumpParams {
                t_start: 300,
                jump_length: l,
                jump_n_sample: r,
            };
            let times = jump_schedule(p).unwrap();
            assert_eq!(count_down(&times), want, "{l}/{r}");
            assert_eq!(evaluation_count(p).unwrap(), want, "{l}/{r}");
            assert_eq!(times.first(), Some(&299));
            assert_eq!(times.last(), Some(&-1));
        }
        for t_start in 1..40 {
            for l in 1..7 {
                for r in 1..5 {
                    let p = JumpParams {
                        t_start,
                        jump_length: l,
                        jump_n_sample: r,
                    };
                    let times = jump_schedule(p).unwrap();
                    assert_eq!(count_down(&times), evaluation_count(p).unwrap());
                    assert!(times.windows(2).all(|w| (w[0] - w[1]).abs() == 1));
                }
            }
        }
    }

    #[test]
    fn small_list_by_hand() {
        // t_T = 6, L = 2, R = 2: jumps at 0 and 2 (j + L < 6).
        let p = JumpParams {
            t_start: 6,
            jump_length: 2,
            jump_n_sample: 2,
        };
        assert_eq!(
            jump_schedule(p).unwrap(),
            vec![5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
        );
        assert!(jump_schedule(JumpParams { t_start: 0, ..p }).is_err());
        assert!(jump_schedule(JumpParams {
            jump_length: 0,
            ..p
        })
        .is_err());
    }

    #[test]
    fn schedule_endpoints() {
        let s = Schedule::cosine(TIMESTEPS).unwrap();
        assert!((s.betas[0] - 0.0002).abs() < 5e-5, "{}", s.betas[0]);
        let n = s.len();
        assert!((s.betas[n - 3] - 0.5555).abs() < 1e-3);
        assert!((s.betas[n - 2] - 0.75).abs() < 1e-3);
        assert_eq!(s.betas[n - 1], 0.9999);
    }
}
