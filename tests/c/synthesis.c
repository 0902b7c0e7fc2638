/*
 * The diffusion model and scar synthesis through the C API, as an outside
 * C99 program sees them:
 *
 * - claim_diffusion_predict_noise against the PyTorch reference outputs
 *   committed in tests/fixtures/denoiser/ (unet2d: keys under
 *   `module.denoise_fn.`, f16; unet3d: plain keys, bf16, two channels,
 *   four frames), with a condition and with the NULL (learned null)
 *   condition, within 1e-3 relative;
 * - claim_diffusion_synthesize on a small synthetic slice stack: only scar/MVO voxels
 *   change, progress counts every network evaluation, cancelling works, a
 *   seed reproduces the image;
 * - the refusals: CUDA in a CPU build, shapes, condition length, labels
 *   without scar, output dims.
 *
 * Usage: synthesis <scratch-dir>. Prints one line per check; exits 0 only
 * when every check passed. Reads fixtures relative to CLAIM_FIXTURES (a
 * macro set by the harness) or ./tests/fixtures.
 */
#include "claim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CLAIM_FIXTURES
#define CLAIM_FIXTURES "tests/fixtures"
#endif

static int failures = 0;
static int checks = 0;

#define CHECK(cond, what)                                                       \
    do {                                                                        \
        checks++;                                                               \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            fprintf(stderr, "FAIL %s:%d: %s (%s); last error: \"%s\"\n",        \
                    __FILE__, __LINE__, what, #cond, claim_last_error_message()); \
        } else {                                                                \
            printf("ok   %s\n", what);                                          \
        }                                                                       \
    } while (0)

static void expect_ok(claim_status status, const char *what)
{
    checks++;
    if (status != CLAIM_OK) {
        failures++;
        fprintf(stderr, "FAIL %s: %s: %s\n", what, claim_status_str(status),
                claim_last_error_message());
        return;
    }
    printf("ok   %s\n", what);
}

static void expect_error(claim_status status, claim_status expected, const char *needle,
                         const char *what)
{
    const char *message = claim_last_error_message();
    checks++;
    if (status != expected || strstr(message, needle) == NULL) {
        failures++;
        fprintf(stderr, "FAIL %s: got %s (\"%s\"), expected %s with \"%s\"\n", what,
                claim_status_str(status), message, claim_status_str(expected), needle);
        return;
    }
    printf("ok   %-44s %s\n", what, message);
}

/* ---- a minimal safetensors reader (F32 tensors only) ---- */

typedef struct {
    unsigned char *bytes;
    size_t size;
    const char *header; /* NUL-terminated copy of the JSON header */
    size_t data_start;
} safetensors_file;

static int st_open(const char *path, safetensors_file *out)
{
    FILE *f = fopen(path, "rb");
    long size;
    uint64_t n = 0;
    char *header;
    int i;
    memset(out, 0, sizeof *out);
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    out->bytes = (unsigned char *)malloc((size_t)size);
    if (!out->bytes || fread(out->bytes, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return 0;
    }
    fclose(f);
    out->size = (size_t)size;
    for (i = 7; i >= 0; i--) n = (n << 8) | out->bytes[i];
    header = (char *)malloc((size_t)n + 1);
    memcpy(header, out->bytes + 8, (size_t)n);
    header[n] = '\0';
    out->header = header;
    out->data_start = 8 + (size_t)n;
    return 1;
}

static void st_close(safetensors_file *f)
{
    free(f->bytes);
    free((void *)f->header);
}

/* Copies tensor `name` (F32) into a new buffer; fills shape and ndim. */
static float *st_f32(const safetensors_file *f, const char *name, uint64_t shape[8],
                     uint32_t *ndim)
{
    char key[64];
    const char *entry, *p, *end;
    size_t begin, stop, n;
    float *values;
    snprintf(key, sizeof key, "\"%s\":", name);
    entry = strstr(f->header, key);
    if (!entry) return NULL;
    end = strchr(entry, '}');
    if (!strstr(entry, "\"F32\"") || strstr(entry, "\"F32\"") > end) return NULL;
    p = strstr(entry, "\"shape\":[");
    if (!p || p > end) return NULL;
    p += strlen("\"shape\":[");
    *ndim = 0;
    while (*p != ']' && *ndim < 8) {
        shape[(*ndim)++] = strtoull(p, (char **)&p, 10);
        if (*p == ',') p++;
    }
    p = strstr(entry, "\"data_offsets\":[");
    if (!p || p > end) return NULL;
    p += strlen("\"data_offsets\":[");
    begin = (size_t)strtoull(p, (char **)&p, 10);
    p++;
    stop = (size_t)strtoull(p, (char **)&p, 10);
    n = (stop - begin) / 4;
    values = (float *)malloc(n * sizeof(float));
    memcpy(values, f->bytes + f->data_start + begin, n * sizeof(float));
    return values;
}

static claim_tensor tensor_of(float *data, const uint64_t *shape, uint32_t ndim)
{
    claim_tensor t;
    uint32_t d;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    t.dtype = CLAIM_TENSOR_F32;
    t.ndim = ndim;
    for (d = 0; d < ndim; d++) t.shape[d] = shape[d];
    t.data = data;
    return t;
}

static double rel_error(const float *got, const float *want, size_t n)
{
    double err = 0, scale = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > err) err = d;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    return err / scale;
}

/* One fixture case: with its condition and with the NULL condition. */
static void parity_case(const char *name)
{
    char path[512], what[128];
    safetensors_file io;
    claim_diffusion_model *model = NULL;
    uint64_t xs[8], ts[8], cs[8], os[8];
    uint32_t xn = 0, tn = 0, cn = 0, on = 0, i;
    float *x, *t, *cond, *want, *want_null, *got;
    int64_t steps[8];
    size_t count = 1;
    claim_tensor xt, ct, out;
    double rel;

    snprintf(path, sizeof path, "%s/denoiser/%s_weights.safetensors", CLAIM_FIXTURES, name);
    snprintf(what, sizeof what, "%s: load", name);
    expect_ok(claim_diffusion_load(path, NULL, &model), what);
    snprintf(path, sizeof path, "%s/denoiser/%s_io.safetensors", CLAIM_FIXTURES, name);
    if (!model || !st_open(path, &io)) {
        CHECK(0, "fixture readable");
        claim_diffusion_free(model);
        return;
    }
    x = st_f32(&io, "x", xs, &xn);
    t = st_f32(&io, "t", ts, &tn);
    cond = st_f32(&io, "cond", cs, &cn);
    want = st_f32(&io, "out", os, &on);
    want_null = st_f32(&io, "out_null", os, &on);
    CHECK(x && t && cond && want && want_null && xn == 5, "fixture tensors present");
    if (!(x && t && cond && want && want_null && xn == 5)) goto done;
    for (i = 0; i < xn; i++) count *= (size_t)xs[i];
    for (i = 0; i < ts[0]; i++) steps[i] = (int64_t)t[i];
    got = (float *)malloc(count * sizeof(float));
    xt = tensor_of(x, xs, xn);
    ct = tensor_of(cond, cs, cn);
    out = tensor_of(got, xs, xn);

    snprintf(what, sizeof what, "%s: predict_noise with condition", name);
    expect_ok(claim_diffusion_predict_noise(model, &xt, steps, &ct, &out), what);
    rel = rel_error(got, want, count);
    printf("     %s: relative error %.2e\n", name, rel);
    snprintf(what, sizeof what, "%s: matches PyTorch within 1e-3", name);
    CHECK(rel < 1e-3, what);

    snprintf(what, sizeof what, "%s: predict_noise with NULL condition", name);
    expect_ok(claim_diffusion_predict_noise(model, &xt, steps, NULL, &out), what);
    rel = rel_error(got, want_null, count);
    printf("     %s null: relative error %.2e\n", name, rel);
    snprintf(what, sizeof what, "%s: null condition matches PyTorch within 1e-3", name);
    CHECK(rel < 1e-3, what);

    /* Refusals naming the argument. */
    {
        uint64_t bad_shape[8];
        claim_tensor bad;
        /* A tensor must hold the elements its shape declares, also when the
           call is expected to refuse it (ASan checks this). */
        float *wider = (float *)calloc(count / xs[1] * (xs[1] + 1), sizeof(float));
        memcpy(bad_shape, xs, sizeof bad_shape);
        bad_shape[1] = xs[1] + 1;
        bad = tensor_of(wider ? wider : x, bad_shape, xn);
        if (wider)
            expect_error(claim_diffusion_predict_noise(model, &bad, steps, &ct, &out),
                         CLAIM_ERR_INVALID_ARGUMENT, "channels", "channel mismatch refused");
        free(wider);
        memcpy(bad_shape, xs, sizeof bad_shape);
        bad_shape[3] = 2; /* H not a multiple of the model's 4 */
        bad_shape[4] = xs[3] * xs[4] / 2;
        bad = tensor_of(x, bad_shape, xn);
        expect_error(claim_diffusion_predict_noise(model, &bad, steps, &ct, &out),
                     CLAIM_ERR_INVALID_ARGUMENT, "multiples of", "H/W not divisible refused");
        memcpy(bad_shape, cs, sizeof bad_shape);
        bad_shape[1] = cs[1] - 1;
        bad = tensor_of(cond, bad_shape, cn);
        expect_error(claim_diffusion_predict_noise(model, &xt, steps, &bad, &out),
                     CLAIM_ERR_INVALID_ARGUMENT, "cond.shape", "condition length refused");
        bad = tensor_of(got, xs, 4);
        expect_error(claim_diffusion_predict_noise(model, &xt, steps, &ct, &bad),
                     CLAIM_ERR_INVALID_ARGUMENT, "out_noise.shape", "output shape refused");
    }
    free(got);
done:
    free(x);
    free(t);
    free(cond);
    free(want);
    free(want_null);
    st_close(&io);
    claim_diffusion_free(model);
}

/* ---- synthesis on a synthetic stack ---- */

#define NI 32
#define NJ 32
#define NK 3
#define NV (NI * NJ * NK)

static claim_volume volume_of(claim_voxel_type dtype, void *data)
{
    claim_volume v;
    memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.voxel_type = dtype;
    v.dims[0] = NI;
    v.dims[1] = NJ;
    v.dims[2] = NK;
    v.spacing[0] = v.spacing[1] = 1.5;
    v.spacing[2] = 8.0;
    v.direction[0] = v.direction[4] = v.direction[8] = 1.0;
    v.data = data;
    return v;
}

/* LV cavity disk, myocardium ring, scar (with an MVO core) on slice 1 only. */
static void make_case(uint8_t *labels, float *image)
{
    int i, j, k;
    for (k = 0; k < NK; k++) {
        for (j = 0; j < NJ; j++) {
            for (i = 0; i < NI; i++) {
                const double x = i - 15.5, y = j - 13.5, r = sqrt(x * x + y * y);
                uint8_t l = 0;
                float v = 80.0f + 3.0f * (float)((i * 7 + j * 3 + k) % 11);
                if (r < 6.0) {
                    l = 1;
                    v = 600.0f;
                } else if (r < 10.0) {
                    l = 2;
                    v = 150.0f;
                    if (k == 1 && x > 2.0) {
                        l = (r < 8.0 && y > 0.0) ? 4 : 3;
                        v = 700.0f;
                    }
                }
                labels[i + NI * (j + NJ * k)] = l;
                image[i + NI * (j + NJ * k)] = v + 0.25f * (float)k;
            }
        }
    }
}

typedef struct {
    uint64_t calls, last_done, last_total, cancel_after;
} progress_log;

static int32_t on_progress(void *user, uint64_t done, uint64_t total)
{
    progress_log *log = (progress_log *)user;
    log->calls++;
    log->last_done = done;
    log->last_total = total;
    return log->cancel_after != 0 && done >= log->cancel_after;
}

static void synthesis_checks(void)
{
    static uint8_t labels[NV], no_scar[NV];
    static float image[NV], out[NV], again[NV], small[NI * NJ];
    claim_volume vi, vl, vo, va, vs;
    claim_synthesis_params params;
    claim_load_options options;
    claim_diffusion_model *model = NULL;
    progress_log log;
    char path[512];
    int n, changed = 0, outside_same = 1, all_finite = 1;

    make_case(labels, image);
    vi = volume_of(CLAIM_VOXEL_F32, image);
    vl = volume_of(CLAIM_VOXEL_U8, labels);
    vo = volume_of(CLAIM_VOXEL_F32, out);
    va = volume_of(CLAIM_VOXEL_F32, again);

    CLAIM_DEFAULT(claim_load_options, &options);
    options.device = CLAIM_DEVICE_CUDA;
    snprintf(path, sizeof path, "%s/denoiser/unet2d_weights.safetensors", CLAIM_FIXTURES);
    expect_error(claim_diffusion_load(path, &options, &model), CLAIM_ERR_DEVICE,
                 "no CUDA back-end", "CUDA in a CPU build refused");
    CHECK(model == NULL, "no handle after a failed load");
    CLAIM_DEFAULT(claim_load_options, &options);
    expect_ok(claim_diffusion_load(path, &options, &model), "load the 2-D model on the CPU");
    if (!model) return;

    CLAIM_DEFAULT(claim_synthesis_params, &params);
    CHECK(params.t_start == 300 && params.jump_length == 5 && params.jump_n_sample == 5,
          "defaults are CLAIM's 300/5/5");
    params.crop_size = 24;
    params.seed = 42;

    /* Defaults: 1480 evaluations for one batch; cancel after 2. */
    memset(&log, 0, sizeof log);
    log.cancel_after = 2;
    memcpy(out, image, sizeof out);
    expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, on_progress, &log, &vo),
                 CLAIM_ERR_CANCELLED, "cancel", "progress callback cancels");
    CHECK(log.last_total == 1480 && log.last_done == 2 && log.calls == 3,
          "1480 evaluations announced at 300/5/5; stopped at once");
    CHECK(memcmp(out, image, sizeof out) == 0, "a cancelled call leaves the output alone");

    params.t_start = 10;
    params.jump_length = 2;
    params.jump_n_sample = 2;
    memset(&log, 0, sizeof log);
    expect_ok(claim_diffusion_synthesize(model, &vi, &vl, &params, on_progress, &log, &vo),
              "synthesize 10/2/2");
    CHECK(log.last_total == 18 && log.last_done == 18 && log.calls == 19,
          "progress: 18 evaluations (10 + 4 jumps x 2), reported before and after each");
    for (n = 0; n < NV; n++) {
        if (labels[n] == 3 || labels[n] == 4) {
            changed += out[n] != image[n];
            all_finite &= isfinite(out[n]) != 0;
        } else if (memcmp(&out[n], &image[n], sizeof(float)) != 0) {
            outside_same = 0;
        }
    }
    CHECK(outside_same, "every voxel outside scar/MVO is bit-identical");
    CHECK(changed > 10 && all_finite, "scar voxels were synthesized");
    expect_ok(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &va), "same seed again");
    CHECK(memcmp(out, again, sizeof out) == 0, "the same seed gives the same image");

    /* Refusals. */
    for (n = 0; n < NV; n++) no_scar[n] = (labels[n] == 3 || labels[n] == 4) ? 2 : labels[n];
    vl.data = no_scar;
    expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                 CLAIM_ERR_INVALID_ARGUMENT, "no scar", "labels without scar refused");
    vl.data = labels;
    vs = volume_of(CLAIM_VOXEL_F32, small);
    vs.dims[2] = 1;
    expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vs),
                 CLAIM_ERR_INVALID_ARGUMENT, "out_image.dims", "output dims mismatch refused");
    params.crop_size = 26;
    expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                 CLAIM_ERR_INVALID_ARGUMENT, "crop_size", "crop size off the model grid refused");
    params.crop_size = 24;
    params.histogram_source = CLAIM_HISTOGRAM_VALUES;
    params.histogram_length = 32;
    expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                 CLAIM_ERR_INVALID_ARGUMENT, "expects 16", "histogram length refused");

    /* A measured histogram drives the sampler. */
    {
        float h[CLAIM_HISTOGRAM_BINS];
        float sum = 0;
        unsigned b;
        expect_ok(claim_histogram_measure(&vi, &vl, NULL, 24, h), "measure a histogram");
        for (b = 0; b < CLAIM_HISTOGRAM_BINS; b++) sum += h[b];
        CHECK(fabs(sum - 1.0) < 1e-5, "measured histogram sums to 1");
        memcpy(params.histogram, h, sizeof h);
        params.histogram_length = CLAIM_HISTOGRAM_BINS;
        params.perturb_histogram = 0;
        expect_ok(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                  "synthesize with the measured histogram");
    }
    /* A one-channel model: one histogram; MVO is painted by its channel. */
    {
        float h[CLAIM_HISTOGRAM_MAX];
        uint32_t length = 0;
        claim_diffusion_info info;
        info.struct_size = sizeof info;
        expect_ok(claim_diffusion_info_get(model, &info), "info of the 2-D model");
        CHECK(info.frames == 1 && info.histogram_count == 1, "2-D model: 1 frame, 1 histogram");
        expect_ok(claim_histogram_measure_channels(model, &vi, &vl, &params, h, CLAIM_HISTOGRAM_MAX,
                                                   &length),
                  "measure the 2-D model's condition");
        CHECK(length == CLAIM_HISTOGRAM_BINS, "one histogram for one channel");
    }
    claim_diffusion_free(model);
    model = NULL;

    /* The built-in model, by name: CLAIM's layout (one channel, 2-D). */
    expect_ok(claim_diffusion_load("builtin", NULL, &model), "load the built-in model");
    if (model) {
        claim_diffusion_info info;
        info.struct_size = sizeof info;
        expect_ok(claim_diffusion_info_get(model, &info), "info of the built-in model");
        CHECK(info.channels == 1 && info.frames == 1 && info.histogram_count == 1,
              "built-in model: one channel, one frame, one histogram");
        claim_diffusion_free(model);
        model = NULL;
    }
    expect_error(claim_diffusion_load("./builtin", NULL, &model), CLAIM_ERR_IO, "builtin",
                 "./builtin is a file path, not the built-in model");

    /* A two-channel 3-D model (C 2, cond 8): the image on both channels,
     * scar from channel 0, MVO from channel 1. */
    snprintf(path, sizeof path, "%s/denoiser/unet3d_weights.safetensors", CLAIM_FIXTURES);
    expect_ok(claim_diffusion_load(path, NULL, &model), "load the two-channel 3-D model");
    if (!model) return;
    {
        claim_diffusion_info info;
        float h[CLAIM_HISTOGRAM_MAX];
        uint32_t length = 0;
        info.struct_size = sizeof info;
        expect_ok(claim_diffusion_info_get(model, &info), "info of the two-channel model");
        CHECK(info.channels == 2 && info.cond_dim == 8 && info.frames == 10 &&
                  info.histogram_count == 0,
              "two channels, condition 8 (not 16 per channel), 10 frames by default");
        CLAIM_DEFAULT(claim_synthesis_params, &params);
        CHECK(params.frames == 0 && params.channel_count == 0, "frames and map default to the model's");
        params.crop_size = 24;
        params.t_start = 6;
        params.jump_length = 1;
        params.jump_n_sample = 1;
        expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                     CLAIM_ERR_INVALID_ARGUMENT, "not 16 per channel",
                     "presets need 16 values per channel");
        params.histogram_source = CLAIM_HISTOGRAM_VALUES;
        params.histogram_length = 8;
        for (n = 0; n < 8; n++) params.histogram[n] = 0.125f;
        params.channel_count = 1;
        params.channel_labels[0] = 3;
        expect_error(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                     CLAIM_ERR_INVALID_ARGUMENT, "but the model has 2 channel(s)",
                     "a channel map that disagrees with the model is refused");
        params.channel_count = 2;
        params.channel_labels[1] = 4;
        memcpy(out, image, sizeof out);
        expect_ok(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, &vo),
                  "synthesize with the two-channel model (3 slices padded to 10 frames)");
        outside_same = 1;
        changed = 0;
        for (n = 0; n < NV; n++) {
            if (labels[n] == 3 || labels[n] == 4) {
                changed += out[n] != image[n];
            } else if (memcmp(&out[n], &image[n], sizeof(float)) != 0) {
                outside_same = 0;
            }
        }
        CHECK(outside_same && changed > 10, "two channels: only scar and MVO voxels change");
        expect_ok(claim_histogram_measure_channels(model, &vi, &vl, &params, h, CLAIM_HISTOGRAM_MAX,
                                                   &length),
                  "measure both channels' histograms");
        CHECK(length == 2 * CLAIM_HISTOGRAM_BINS, "16 values per channel");
        expect_error(claim_histogram_measure_channels(model, &vi, &vl, &params, h, 16, NULL),
                     CLAIM_ERR_INVALID_ARGUMENT, "capacity", "too little room refused");
    }
    claim_diffusion_free(model);
}

int main(void)
{
    parity_case("unet2d");
    parity_case("unet3d");
    synthesis_checks();
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
