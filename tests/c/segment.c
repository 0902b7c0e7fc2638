/*
 * nnU-Net segmentation through the C API, as an outside C99 program sees it:
 *
 * - claim_segmenter_load of the committed PyTorch-saved results folder
 *   (tests/fixtures/nnunet/Dataset990_ClaimTiny/..._2d: folds 0 and 1),
 *   fold and configuration selection, and every refusal: NULLs, a missing
 *   path, a file that is no model, an unsupported architecture, CUDA, FP16,
 *   bad options;
 * - claim_segmenter_info_get: what the plans and checkpoints say;
 * - claim_segmenter_predict_logits against the logits of the upstream
 *   PyTorch module (dynamic_network_architectures), within 1e-4 relative,
 *   and its shape refusals;
 * - claim_segmenter_segment on a synthetic LGE-like stack: the labels equal the Rust
 *   library's (written by the driver), geometry is kept, progress is
 *   monotone with total = windows x mirror passes x folds computed here from
 *   the model's info, a cancel returns CLAIM_ERR_CANCELLED and leaves the
 *   output alone, and every bad argument is refused.
 *
 * Usage: segment <scratch-dir> <results-folder>. The driver
 * (tests/ffi_harness.rs) writes into <scratch-dir>:
 *   logits_2d.txt         "input <ndim> <dims>", values, "logits <ndim> <dims>",
 *                         values (one per line; from logits_2d.safetensors);
 *   image.nii.gz          the f32 test image (oblique geometry, no zero voxel);
 *   expected_labels.nii.gz the Rust library's segmentation of it with folds
 *                         0+1, mirroring, step 0.5, post-processing and the
 *                         label scheme 11/12/13/14 (no RV);
 *   not_a_model.pth       bytes that are no checkpoint;
 *   resenc/               a results folder whose plans name ResidualEncoderUNet.
 *   huge_patch/           a results folder whose plans ask for a 100000² patch.
 * Prints one line per check; exits 0 only when every check passed.
 */
#include "claim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A refused call: the expected status, a message containing `needle`. */
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
    printf("ok   %-46s %s\n", what, message);
}

static const char *scratch;
static const char *folder;

static const char *in_scratch(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", scratch, name);
    return path;
}

/* ---- loading ---- */

static void loading_checks(void)
{
    claim_segmenter *model = (claim_segmenter *)&failures; /* must become NULL */
    claim_segmenter_options options;
    claim_load_options load;
    claim_segmenter_info info;

    expect_error(claim_segmenter_load(NULL, NULL, NULL, &model), CLAIM_ERR_INVALID_ARGUMENT,
                 "path must not be NULL", "NULL path refused");
    CHECK(model == NULL, "a failed load leaves *out NULL");
    expect_error(claim_segmenter_load(folder, NULL, NULL, NULL), CLAIM_ERR_INVALID_ARGUMENT,
                 "out must not be NULL", "NULL out refused");
    expect_error(claim_segmenter_load(in_scratch("no_such_model"), NULL, NULL, &model),
                 CLAIM_ERR_IO, "no_such_model", "missing path is an I/O error");
    expect_error(claim_segmenter_load(in_scratch("not_a_model.pth"), NULL, NULL, &model),
                 CLAIM_ERR_FORMAT, "not_a_model.pth", "a file that is no model: format error");
    expect_error(claim_segmenter_load(in_scratch("resenc"), NULL, NULL, &model),
                 CLAIM_ERR_UNSUPPORTED, "ResidualEncoderUNet", "unsupported architecture");
    /* Plans asking for a 100000 x 100000 window: refused at load with the
       size it would need, and this process lives on. */
    expect_error(claim_segmenter_load(in_scratch("huge_patch"), NULL, NULL, &model),
                 CLAIM_ERR_OUT_OF_MEMORY, "patch_size [100000, 100000]",
                 "a 100000 x 100000 patch is refused at load");
    /* The voxel limit: images over it are refused from their header. */
    {
        claim_image *img = NULL;
        CHECK(claim_max_voxels_get() == CLAIM_MAX_VOXELS_DEFAULT, "default voxel limit");
        expect_ok(claim_max_voxels_set(100), "voxel limit set to 100");
        CHECK(claim_max_voxels_get() == 100, "voxel limit reads back");
        expect_error(claim_image_read(in_scratch("image.nii.gz"), &img),
                     CLAIM_ERR_OUT_OF_MEMORY, "limit of 100 voxels", "image over the limit");
        CHECK(img == NULL, "no image over the limit");
        expect_error(claim_max_voxels_set((uint64_t)1 << 40), CLAIM_ERR_INVALID_ARGUMENT,
                     "voxel limit", "absurd voxel limit refused");
        expect_ok(claim_max_voxels_set(0), "voxel limit back to the default");
        CHECK(claim_max_voxels_get() == CLAIM_MAX_VOXELS_DEFAULT, "default again");
        expect_error(claim_image_read("", &img), CLAIM_ERR_IO, "(an empty path)",
                     "an empty path is named");
    }
    CHECK(model == NULL, "no handle after the failed loads");

    CLAIM_DEFAULT(claim_load_options, &load);
    load.device = CLAIM_DEVICE_CUDA;
    expect_error(claim_segmenter_load(folder, &load, NULL, &model), CLAIM_ERR_DEVICE,
                 "no CUDA back-end", "CUDA in a CPU build refused");
    CLAIM_DEFAULT(claim_load_options, &load);
    load.precision = CLAIM_PRECISION_FP16;
    expect_error(claim_segmenter_load(folder, &load, NULL, &model), CLAIM_ERR_UNSUPPORTED,
                 "F16 precision on the CPU", "FP16 on the CPU refused");

    CLAIM_DEFAULT(claim_segmenter_options, &options);
    CHECK(options.struct_size == sizeof options && options.fold_count == 0 &&
              options.configuration[0] == '\0',
          "default options: every fold, the trained configuration");
    options.fold_count = 1;
    options.folds[0] = 4;
    expect_error(claim_segmenter_load(folder, NULL, &options, &model),
                 CLAIM_ERR_INVALID_ARGUMENT, "fold 4 not found", "a fold that is not there");
    options.folds[0] = -2;
    expect_error(claim_segmenter_load(folder, NULL, &options, &model),
                 CLAIM_ERR_INVALID_ARGUMENT, "segmenter_options.folds[0]", "negative fold refused");
    options.fold_count = CLAIM_SEGMENTER_MAX_FOLDS + 1;
    expect_error(claim_segmenter_load(folder, NULL, &options, &model),
                 CLAIM_ERR_INVALID_ARGUMENT, "segmenter_options.fold_count",
                 "more than 16 folds refused");
    CLAIM_DEFAULT(claim_segmenter_options, &options);
    strcpy(options.configuration, "3d_lowres");
    expect_error(claim_segmenter_load(folder, NULL, &options, &model),
                 CLAIM_ERR_INVALID_ARGUMENT, "3d_lowres", "unknown configuration refused");
    options.struct_size = 8;
    expect_error(claim_segmenter_load(folder, NULL, &options, &model),
                 CLAIM_ERR_INVALID_ARGUMENT, "segmenter_options.struct_size", "struct_size checked");

    /* Fold 1 under the plans' 2d_resampled configuration (same network). */
    CLAIM_DEFAULT(claim_segmenter_options, &options);
    options.fold_count = 1;
    options.folds[0] = 1;
    strcpy(options.configuration, "2d_resampled");
    expect_ok(claim_segmenter_load(folder, NULL, &options, &model),
              "load fold 1 as configuration 2d_resampled");
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect_ok(claim_segmenter_info_get(model, &info), "info of the selection");
    CHECK(info.fold_count == 1 && info.folds[0] == 1 &&
              strcmp(info.configuration, "2d_resampled") == 0 && info.spacing[0] == 1.25,
          "the selected fold and configuration are in use");
    claim_segmenter_free(model);
    claim_segmenter_free(NULL);

    /* The built-in segmenter, by name: 2d, fold 0, the phantom's six classes. */
    expect_ok(claim_segmenter_load("builtin", NULL, NULL, &model), "load the built-in segmenter");
    if (model) {
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        expect_ok(claim_segmenter_info_get(model, &info), "info of the built-in segmenter");
        CHECK(info.num_classes == 6 && info.fold_count == 1 &&
                  strcmp(info.configuration, "2d") == 0,
              "built-in segmenter: 2d, one fold, six classes");
        claim_segmenter_free(model);
    }
}

/* ---- raw logits ---- */

/* Reads "<name> <ndim> <dims...>" and the values; returns a new buffer. */
static float *read_tensor(FILE *f, const char *name, uint64_t shape[8], uint32_t *ndim,
                          size_t *count)
{
    char word[32];
    uint32_t d;
    size_t n;
    float *values;
    if (fscanf(f, "%31s %u", word, ndim) != 2 || strcmp(word, name) != 0 || *ndim > 8) {
        return NULL;
    }
    *count = 1;
    for (d = 0; d < *ndim; d++) {
        unsigned long long v;
        if (fscanf(f, "%llu", &v) != 1) return NULL;
        shape[d] = v;
        *count *= (size_t)v;
    }
    values = (float *)malloc(*count * sizeof(float));
    for (n = 0; values && n < *count; n++) {
        if (fscanf(f, "%f", &values[n]) != 1) {
            free(values);
            return NULL;
        }
    }
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

static void logits_checks(const claim_segmenter *model, const claim_segmenter *fold1)
{
    FILE *f = fopen(in_scratch("logits_2d.txt"), "r");
    uint64_t xs[8], ls[8], bad_shape[8];
    uint32_t xn = 0, ln = 0;
    size_t xc = 0, lc = 0;
    float *x = NULL, *want = NULL, *got = NULL;
    claim_tensor xt, ot, bad;
    double rel;

    if (f) {
        x = read_tensor(f, "input", xs, &xn, &xc);
        want = read_tensor(f, "logits", ls, &ln, &lc);
        fclose(f);
    }
    CHECK(x && want && xn == 4 && ln == 4 && ls[1] == 5, "reference logits readable");
    if (!(x && want && xn == 4 && ln == 4)) goto done;
    got = (float *)malloc(lc * sizeof(float));
    xt = tensor_of(x, xs, xn);
    ot = tensor_of(got, ls, ln);
    expect_ok(claim_segmenter_predict_logits(model, &xt, &ot), "predict_logits");
    rel = rel_error(got, want, lc);
    printf("     2d fold 0: relative error %.2e vs PyTorch\n", rel);
    CHECK(rel < 1e-4, "logits match PyTorch within 1e-4 relative");
    expect_ok(claim_segmenter_predict_logits(fold1, &xt, &ot), "predict_logits of fold 1");
    CHECK(rel_error(got, want, lc) > 1e-2, "fold 1's network is another one");

    memcpy(bad_shape, xs, sizeof bad_shape);
    bad_shape[1] = 2;
    bad_shape[3] = xs[3] / 2;
    bad = tensor_of(x, bad_shape, xn);
    expect_error(claim_segmenter_predict_logits(model, &bad, &ot), CLAIM_ERR_INVALID_ARGUMENT,
                 "x.shape[1]", "wrong channel count refused");
    bad = tensor_of(x, xs + 1, 3);
    expect_error(claim_segmenter_predict_logits(model, &bad, &ot), CLAIM_ERR_INVALID_ARGUMENT,
                 "x.shape: expected 4 dimensions", "wrong rank refused");
    memcpy(bad_shape, xs, sizeof bad_shape);
    bad_shape[2] = 30; /* not a multiple of the strides' product, 8 */
    bad_shape[3] = xs[2] * xs[3] / 30 - (xs[2] * xs[3] / 30) % 8;
    bad = tensor_of(x, bad_shape, xn);
    {
        uint64_t out_shape[8];
        claim_tensor out_bad;
        memcpy(out_shape, bad_shape, sizeof out_shape);
        out_shape[1] = 5;
        out_bad = tensor_of(got, out_shape, 4);
        expect_error(claim_segmenter_predict_logits(model, &bad, &out_bad),
                     CLAIM_ERR_INVALID_ARGUMENT, "multiple", "spatial size off the grid refused");
    }
    bad = tensor_of(got, xs, xn); /* 1 channel where 5 are written */
    expect_error(claim_segmenter_predict_logits(model, &xt, &bad), CLAIM_ERR_INVALID_ARGUMENT,
                 "out_logits.shape", "output shape refused");
    expect_error(claim_segmenter_predict_logits(model, NULL, &ot), CLAIM_ERR_INVALID_ARGUMENT,
                 "x must not be NULL", "NULL input refused");
    expect_error(claim_segmenter_predict_logits(NULL, &xt, &ot), CLAIM_ERR_INVALID_ARGUMENT,
                 "segmenter must not be NULL", "NULL segmenter refused");
done:
    free(x);
    free(want);
    free(got);
}

/* ---- segmentation ---- */

typedef struct {
    uint64_t calls, last_done, total, cancel_at;
    int monotone, same_total, started_at_zero;
} progress_log;

static int32_t on_progress(void *user, uint64_t done, uint64_t total)
{
    progress_log *log = (progress_log *)user;
    if (log->calls == 0) {
        log->started_at_zero = done == 0;
        log->total = total;
    } else {
        log->monotone &= done == log->last_done + 1;
        log->same_total &= total == log->total;
    }
    log->calls++;
    log->last_done = done;
    return log->cancel_at != 0 && done >= log->cancel_at;
}

static int32_t cancel_at_once(void *user, uint64_t done, uint64_t total)
{
    (void)done;
    (void)total;
    ++*(uint64_t *)user;
    return 1;
}

static void reset(progress_log *log, uint64_t cancel_at)
{
    memset(log, 0, sizeof *log);
    log->monotone = log->same_total = 1;
    log->cancel_at = cancel_at;
}

/* nnU-Net's window count along one axis. */
static uint64_t windows(uint64_t size, uint64_t patch, double step)
{
    if (size <= patch) return 1;
    return (uint64_t)ceil((double)(size - patch) / (patch * step)) + 1;
}

/* Evaluations of a 2-D model on `image` (no zero voxel, so nothing is
 * cropped; spacing equal to the plans', so nothing is resampled). */
static uint64_t expected_total(const claim_segmenter_info *info, const claim_volume *image,
                               double step, int mirroring)
{
    /* Patch axes are (y, x) = (j, i) of the volume. */
    const uint64_t per_slice = windows(image->dims[1], info->patch_size[0], step) *
                               windows(image->dims[0], info->patch_size[1], step);
    const uint64_t passes = mirroring ? (1u << info->mirroring_axis_count) : 1;
    return per_slice * image->dims[2] * passes * info->fold_count;
}

static int same_geometry(const claim_volume *a, const claim_volume *b)
{
    return memcmp(a->spacing, b->spacing, sizeof a->spacing) == 0 &&
           memcmp(a->origin, b->origin, sizeof a->origin) == 0 &&
           memcmp(a->direction, b->direction, sizeof a->direction) == 0;
}

static void segment_checks(const claim_segmenter *model)
{
    claim_image *image_handle = NULL, *expected_handle = NULL;
    claim_volume image, expected, out, small;
    claim_segmenter_info info;
    claim_segmentation_params params, bad;
    claim_label_scheme scheme, bad_scheme;
    progress_log log;
    uint8_t *labels = NULL, tiny[4];
    int16_t *wide = NULL;
    float *nan_image = NULL;
    size_t count, n;
    int equal = 1, untouched = 1;
    uint64_t total;

    expect_ok(claim_image_read(in_scratch("image.nii.gz"), &image_handle), "read the test image");
    expect_ok(claim_image_read(in_scratch("expected_labels.nii.gz"), &expected_handle),
              "read the library's labels");
    if (!image_handle || !expected_handle) goto done;
    memset(&image, 0, sizeof image);
    image.struct_size = sizeof image;
    expected = image;
    expect_ok(claim_image_view(image_handle, &image), "view the image");
    expect_ok(claim_image_view(expected_handle, &expected), "view the labels");
    CHECK(image.voxel_type == CLAIM_VOXEL_F32 && expected.voxel_type == CLAIM_VOXEL_U8,
          "f32 image, u8 reference labels");
    count = (size_t)(image.dims[0] * image.dims[1] * image.dims[2]);
    labels = (uint8_t *)malloc(count);
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect_ok(claim_segmenter_info_get(model, &info), "info");

    CLAIM_DEFAULT(claim_segmentation_params, &params);
    CHECK(params.struct_size == sizeof params && params.mirroring == 1 &&
              params.step_size == 0.5f && params.postprocess == 1 && params.labels == NULL,
          "defaults: mirroring, step 0.5, post-processing, EMIDEC (labels NULL)");
    CLAIM_DEFAULT(claim_label_scheme, &scheme);
    scheme.lv_cavity = 11;
    scheme.myocardium = 12;
    scheme.scar = 13;
    scheme.mvo = 14;
    params.labels = &scheme;

    /* The geometry fields are outputs: start them off as nonsense. */
    out = image;
    out.voxel_type = CLAIM_VOXEL_U8;
    out.data = labels;
    out.spacing[0] = out.origin[1] = out.direction[2] = 77.0;
    reset(&log, 0);
    expect_ok(claim_segmenter_segment(model, &image, &params, on_progress, &log, &out), "segment");
    total = expected_total(&info, &image, 0.5, 1);
    printf("     %llu network evaluations announced, %llu expected\n",
           (unsigned long long)log.total, (unsigned long long)total);
    CHECK(log.started_at_zero && log.monotone && log.same_total && log.last_done == log.total &&
              log.calls == log.total + 1,
          "progress: 0 first, then each evaluation once, one total");
    CHECK(log.total == total, "total = windows x slices x mirror passes x folds");
    CHECK(same_geometry(&out, &image), "the output has the image's geometry");
    for (n = 0; n < count; n++) equal &= labels[n] == ((const uint8_t *)expected.data)[n];
    CHECK(equal, "labels equal the Rust library's, voxel for voxel");
    {
        size_t per[16] = {0};
        for (n = 0; n < count; n++) per[labels[n] & 15]++;
        printf("     voxels: %zu background, %zu cavity, %zu myocardium, %zu scar, %zu MVO\n",
               per[0], per[11], per[12], per[13], per[14]);
        CHECK(per[0] + per[11] + per[12] + per[13] + per[14] == count,
              "only background and the scheme's labels are written");
    }

    /* Another dtype: the same values. */
    wide = (int16_t *)malloc(count * sizeof(int16_t));
    out.voxel_type = CLAIM_VOXEL_I16;
    out.data = wide;
    expect_ok(claim_segmenter_segment(model, &image, &params, NULL, NULL, &out), "segment into int16");
    equal = 1;
    for (n = 0; n < count; n++) equal &= wide[n] == (int16_t)labels[n];
    CHECK(equal, "int16 output holds the same labels");

    /* No mirroring, step 1: fewer windows, one pass. */
    out.voxel_type = CLAIM_VOXEL_U8;
    out.data = labels;
    params.mirroring = 0;
    params.step_size = 1.0f;
    reset(&log, 0);
    expect_ok(claim_segmenter_segment(model, &image, &params, on_progress, &log, &out),
              "segment without mirroring, step 1");
    CHECK(log.total == expected_total(&info, &image, 1.0, 0) && log.last_done == log.total,
          "total without mirroring at step 1");
    params.mirroring = 1;
    params.step_size = 0.5f;

    /* Cancelling after 3 evaluations: nothing written. */
    memset(labels, 0xAB, count);
    out.spacing[0] = 77.0;
    reset(&log, 3);
    expect_error(claim_segmenter_segment(model, &image, &params, on_progress, &log, &out),
                 CLAIM_ERR_CANCELLED, "cancel", "progress callback cancels");
    CHECK(log.calls == 4 && log.last_done == 3, "stopped at once (0, 1, 2, 3)");
    for (n = 0; n < count; n++) untouched &= labels[n] == 0xAB;
    CHECK(untouched && out.spacing[0] == 77.0, "a cancelled call leaves the output alone");
    {
        /* Cancelling at the announcement (done = 0). */
        uint64_t calls = 0;
        expect_error(claim_segmenter_segment(model, &image, &params, cancel_at_once, &calls, &out),
                     CLAIM_ERR_CANCELLED, "cancel", "cancel at done = 0");
        CHECK(calls == 1, "one call, then stopped");
    }

    /* Refusals. */
    bad = params;
    bad.step_size = 0.0f;
    expect_error(claim_segmenter_segment(model, &image, &bad, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.step_size", "step 0 refused");
    bad.step_size = 1.5f;
    expect_error(claim_segmenter_segment(model, &image, &bad, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.step_size", "step 1.5 refused");
    bad = params;
    bad.mirroring = 2;
    expect_error(claim_segmenter_segment(model, &image, &bad, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.mirroring", "mirroring flag 2 refused");
    bad = params;
    bad_scheme = scheme;
    bad_scheme.mvo = 13;
    bad.labels = &bad_scheme;
    expect_error(claim_segmenter_segment(model, &image, &bad, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params->labels", "a scheme sharing a label refused");
    bad = params;
    bad_scheme = scheme;
    bad_scheme.scar = 300;
    bad.labels = &bad_scheme;
    expect_error(claim_segmenter_segment(model, &image, &bad, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "300", "a label a u8 map cannot hold refused");
    bad = params;
    bad.struct_size = 4;
    expect_error(claim_segmenter_segment(model, &image, &bad, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.struct_size", "params struct_size checked");
    expect_error(claim_segmenter_segment(model, &image, NULL, NULL, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params must not be NULL", "NULL params refused");
    expect_error(claim_segmenter_segment(model, NULL, &params, NULL, NULL, &out),
                 CLAIM_ERR_INVALID_ARGUMENT, "image must not be NULL", "NULL image refused");
    expect_error(claim_segmenter_segment(NULL, &image, &params, NULL, NULL, &out),
                 CLAIM_ERR_INVALID_ARGUMENT, "segmenter must not be NULL", "NULL model refused");
    expect_error(claim_segmenter_segment(model, &image, &params, NULL, NULL, NULL),
                 CLAIM_ERR_INVALID_ARGUMENT, "out_labels must not be NULL", "NULL output refused");
    small = out;
    small.dims[0] = 2;
    small.dims[1] = 2;
    small.dims[2] = 1;
    small.data = tiny;
    expect_error(claim_segmenter_segment(model, &image, &params, NULL, NULL, &small),
                 CLAIM_ERR_INVALID_ARGUMENT, "out_labels.dims", "output dims mismatch refused");
    nan_image = (float *)malloc(count * sizeof(float));
    memcpy(nan_image, image.data, count * sizeof(float));
    nan_image[count / 2] = (float)NAN;
    small = image;
    small.data = nan_image;
    expect_error(claim_segmenter_segment(model, &small, &params, NULL, NULL, &out),
                 CLAIM_ERR_INVALID_ARGUMENT, "not finite", "a NaN voxel refused");
done:
    free(labels);
    free(wide);
    free(nan_image);
    claim_image_free(image_handle);
    claim_image_free(expected_handle);
}

int main(int argc, char **argv)
{
    claim_segmenter *model = NULL, *fold1 = NULL;
    claim_segmenter_options options;
    claim_segmenter_info info;

    if (argc != 3) {
        fprintf(stderr, "usage: %s <scratch-dir> <results-folder>\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    folder = argv[2];

    loading_checks();

    expect_ok(claim_segmenter_load(folder, NULL, NULL, &model), "load the results folder");
    if (!model) {
        printf("%d checks, %d failures\n", checks, failures);
        return 1;
    }
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect_ok(claim_segmenter_info_get(model, &info), "info_get");
    CHECK(info.spatial_dims == 2 && info.input_channels == 1 && info.num_classes == 5,
          "2-D, 1 channel, 5 classes");
    CHECK(info.patch_size[0] == 64 && info.patch_size[1] == 64 && info.patch_size[2] == 0,
          "patch 64 x 64");
    CHECK(info.spacing[0] == 1.5625 && info.spacing[1] == 1.5625 && info.spacing[2] == 0.0,
          "spacing 1.5625 mm");
    CHECK(info.fold_count == 2 && info.folds[0] == 0 && info.folds[1] == 1,
          "every numbered fold loaded: 0, 1");
    CHECK(info.mirroring_axis_count == 2 && info.mirroring_axes[0] == 0 &&
              info.mirroring_axes[1] == 1,
          "mirroring over both in-plane axes");
    CHECK(strcmp(info.configuration, "2d") == 0 && strcmp(info.trainer, "nnUNetTrainer") == 0,
          "configuration 2d, trainer nnUNetTrainer");
    CHECK(info.parameters > 1000, "parameters counted");
    info.struct_size = 0;
    expect_error(claim_segmenter_info_get(model, &info), CLAIM_ERR_INVALID_ARGUMENT,
                 "out.struct_size", "info struct_size checked");
    expect_error(claim_segmenter_info_get(NULL, &info), CLAIM_ERR_INVALID_ARGUMENT,
                 "segmenter must not be NULL", "info of NULL refused");

    CLAIM_DEFAULT(claim_segmenter_options, &options);
    options.fold_count = 1;
    options.folds[0] = 1;
    expect_ok(claim_segmenter_load(folder, NULL, &options, &fold1), "load fold 1 alone");
    if (fold1) logits_checks(model, fold1);
    segment_checks(model);

    claim_segmenter_free(fold1);
    claim_segmenter_free(model);
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
