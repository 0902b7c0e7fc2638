/*
 * No exported function reads or writes past a caller's struct_size, for
 * every struct and every function that takes or fills one.
 *
 * Write side: a struct in a buffer of guard bytes (0xA5) is filled with a
 * truncated size (every claim_<name>_default for sizes 0 .. sizeof + 8) or
 * a refused struct_size (every function filling an output struct); the
 * bytes past what the library may write must keep their pattern.
 *
 * Read side: each struct argument is copied to the very end of a page
 * whose next page is PROT_NONE (mmap + mprotect), so a single byte read or
 * written past struct_size faults and kills this program. Every function
 * taking a struct is called that way with the smallest size it accepts (an
 * older caller's; for claim_tensor the 80 bytes from before `dtype`) and
 * with a struct_size of 4, which must be refused. Pointers the library
 * must not follow (claim_smile_params.aha->labels, documented as ignored)
 * point into the PROT_NONE page.
 *
 * Arguments: a scratch directory (unused) and the nnU-Net 2-D results
 * folder. CLAIM_FIXTURES names the fixtures folder (denoiser weights).
 */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS with -std=c99 */

#include "claim.h"
#include "synthetic_lv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
            printf("FAIL %s (%s:%d): %s\n", what, __FILE__, __LINE__,           \
                   claim_last_error_message());                                 \
        }                                                                       \
    } while (0)

#define GUARD 0xA5
#define SLACK 64

/* ---- guard-byte buffers ---- */

/* Room for the largest struct plus slack, aligned for any member. */
typedef union {
    double d;
    void *p;
    uint64_t u;
    unsigned char bytes[1024];
} guarded;

static int untouched_from(const guarded *g, size_t from, size_t to)
{
    size_t n;
    for (n = from; n < to; n++) {
        if (g->bytes[n] != GUARD) return 0;
    }
    return 1;
}

static uint32_t size_field(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* claim_<name>_default(out, size) for size 0 .. sizeof + 8: writes at most
 * min(size, sizeof) bytes, nothing below 4, and sets struct_size to that. */
#define CHECK_DEFAULT(name)                                                                  \
    do {                                                                                     \
        guarded g;                                                                           \
        size_t size, sizes_ok = 1;                                                           \
        for (size = 0; size <= sizeof(name) + 8; size++) {                                   \
            const size_t written = size < sizeof(name) ? size : sizeof(name);                \
            memset(g.bytes, GUARD, sizeof g.bytes);                                          \
            name##_default((name *)(void *)g.bytes, size);                                   \
            if (size < 4) {                                                                  \
                sizes_ok &= untouched_from(&g, 0, sizeof(name) + SLACK);                     \
            } else {                                                                         \
                sizes_ok &= untouched_from(&g, written, sizeof(name) + SLACK);               \
                sizes_ok &= size_field(g.bytes) == written;                                  \
            }                                                                                \
        }                                                                                    \
        CHECK(sizes_ok, #name "_default writes at most size bytes");                        \
    } while (0)

static void defaults(void)
{
    CHECK_DEFAULT(claim_label_scheme);
    CHECK_DEFAULT(claim_aha_params);
    CHECK_DEFAULT(claim_smile_params);
    CHECK_DEFAULT(claim_bullseye_options);
    CHECK_DEFAULT(claim_load_options);
    CHECK_DEFAULT(claim_synthesis_params);
    CHECK_DEFAULT(claim_segmenter_options);
    CHECK_DEFAULT(claim_segmentation_params);
    printf("ok   every claim_*_default writes at most the caller's size\n");
}

/* ---- page-end copies ---- */

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

#define MAX_PAGES 64
static unsigned char *mappings[MAX_PAGES];
static int mapping_count = 0;

/* The first byte of an inaccessible page (the one after a fresh page). */
static unsigned char *fresh_fence(void)
{
    const size_t page = page_size();
    unsigned char *base;
    if (mapping_count == MAX_PAGES) {
        printf("FAIL too many page mappings\n");
        exit(1);
    }
    base = (unsigned char *)mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + page, page, PROT_NONE) != 0) {
        printf("FAIL mmap/mprotect\n");
        exit(1);
    }
    mappings[mapping_count++] = base;
    return base + page;
}

/* `n` bytes of `src` copied so that they end exactly where an inaccessible
 * page begins, with struct_size set to `n`. */
static void *at_page_end(const void *src, size_t n)
{
    unsigned char *dst = fresh_fence() - n;
    const uint32_t size = (uint32_t)n;
    memcpy(dst, src, n);
    memcpy(dst, &size, sizeof size);
    return dst;
}

/* A pointer into an inaccessible page: dereferencing it faults. */
static const void *poison(void)
{
    return fresh_fence();
}

static void unmap_all(void)
{
    int i;
    for (i = 0; i < mapping_count; i++) munmap(mappings[i], 2 * page_size());
    mapping_count = 0;
}

/* The struct_size of 4 (the field alone) at a page end: must be refused. */
#define TRUNCATED(value) at_page_end(&(value), 4)

static void expect_status(claim_status got, claim_status want, const char *what)
{
    checks++;
    if (got != want) {
        failures++;
        printf("FAIL %s: got %s, want %s: %s\n", what, claim_status_str(got),
               claim_status_str(want), claim_last_error_message());
    }
}

/* ---- volumes, SMILE, statistics, bull's-eye ---- */

static uint8_t heart[SYNTHETIC_LV_VOXELS];
static uint8_t segments[SYNTHETIC_LV_VOXELS];
static uint8_t drawn[SYNTHETIC_LV_VOXELS];

static void smile_structs(void)
{
    claim_label_scheme scheme;
    claim_aha_params aha;
    claim_smile_params smile;
    claim_bullseye_options bullseye;
    claim_aha_segment_stats stats;
    claim_smile_info info;
    claim_volume labels, out_segments, out_labels, view;
    claim_smile_context *ctx = NULL;
    claim_image *img = NULL;
    size_t needed = 0;
    char svg[1];
    guarded g;

    CLAIM_DEFAULT(claim_label_scheme, &scheme);
    scheme.rv = 5;
    synthetic_lv_labels(&scheme, heart);
    labels = synthetic_lv_volume(CLAIM_VOXEL_U8, heart);
    out_segments = synthetic_lv_volume(CLAIM_VOXEL_U8, segments);
    out_labels = synthetic_lv_volume(CLAIM_VOXEL_U8, drawn);

    /* claim_aha_parcellate: labels, params, params->labels, out_segments. */
    CLAIM_DEFAULT(claim_aha_params, &aha);
    aha.labels = (const claim_label_scheme *)at_page_end(&scheme, sizeof scheme);
    expect_status(claim_aha_parcellate((claim_volume *)at_page_end(&labels, sizeof labels),
                                       (claim_aha_params *)at_page_end(&aha, sizeof aha),
                                       (claim_volume *)at_page_end(&out_segments,
                                                                   sizeof out_segments)),
                  CLAIM_OK, "aha_parcellate with every struct at a page end");
    expect_status(claim_aha_parcellate(TRUNCATED(labels), &aha, &out_segments),
                  CLAIM_ERR_INVALID_ARGUMENT, "aha_parcellate labels.struct_size 4");
    expect_status(claim_aha_parcellate(&labels, TRUNCATED(aha), &out_segments),
                  CLAIM_ERR_INVALID_ARGUMENT, "aha_parcellate params.struct_size 4");
    {
        claim_aha_params bad = aha;
        bad.labels = TRUNCATED(scheme);
        expect_status(claim_aha_parcellate(&labels, &bad, &out_segments),
                      CLAIM_ERR_INVALID_ARGUMENT, "aha_parcellate params->labels.struct_size 4");
    }
    expect_status(claim_aha_parcellate(&labels, &aha, TRUNCATED(out_segments)),
                  CLAIM_ERR_INVALID_ARGUMENT, "aha_parcellate out_segments.struct_size 4");

    /* claim_smile_generate / context: params, ->labels, ->aha (whose
     * labels must not be read: they point into an inaccessible page). */
    CLAIM_DEFAULT(claim_smile_params, &smile);
    smile.territory = CLAIM_TERRITORY_LAD;
    smile.burden = 0.2;
    smile.labels = (const claim_label_scheme *)at_page_end(&scheme, sizeof scheme);
    {
        claim_aha_params ignored_labels = aha;
        ignored_labels.labels = (const claim_label_scheme *)poison();
        smile.aha = (const claim_aha_params *)at_page_end(&ignored_labels, sizeof ignored_labels);
    }
    expect_status(claim_smile_generate((claim_volume *)at_page_end(&labels, sizeof labels),
                                       (claim_smile_params *)at_page_end(&smile, sizeof smile), 7,
                                       (claim_volume *)at_page_end(&out_labels, sizeof out_labels)),
                  CLAIM_OK, "smile_generate with every struct at a page end");
    expect_status(claim_smile_generate(&labels, TRUNCATED(smile), 7, &out_labels),
                  CLAIM_ERR_INVALID_ARGUMENT, "smile_generate params.struct_size 4");
    {
        claim_smile_params bad = smile;
        bad.labels = TRUNCATED(scheme);
        expect_status(claim_smile_generate(&labels, &bad, 7, &out_labels),
                      CLAIM_ERR_INVALID_ARGUMENT, "smile_generate params->labels.struct_size 4");
        bad = smile;
        bad.aha = TRUNCATED(aha);
        expect_status(claim_smile_generate(&labels, &bad, 7, &out_labels),
                      CLAIM_ERR_INVALID_ARGUMENT, "smile_generate params->aha.struct_size 4");
    }
    expect_status(claim_smile_context_create((claim_volume *)at_page_end(&labels, sizeof labels),
                                             (claim_volume *)at_page_end(&out_segments,
                                                                         sizeof out_segments),
                                             (claim_smile_params *)at_page_end(&smile,
                                                                               sizeof smile),
                                             &ctx),
                  CLAIM_OK, "smile_context_create with every struct at a page end");
    claim_smile_context_free(ctx);
    ctx = NULL;
    expect_status(claim_smile_context_create(&labels, TRUNCATED(out_segments), &smile, &ctx),
                  CLAIM_ERR_INVALID_ARGUMENT, "smile_context_create segments.struct_size 4");
    expect_status(claim_smile_context_create(&labels, NULL, &smile, &ctx), CLAIM_OK,
                  "smile_context_create");
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect_status(claim_smile_context_draw(ctx, 3,
                                           (claim_volume *)at_page_end(&out_labels,
                                                                       sizeof out_labels),
                                           (claim_smile_info *)at_page_end(&info, sizeof info)),
                  CLAIM_OK, "smile_context_draw with out_labels and out_info at a page end");
    expect_status(claim_smile_context_draw(ctx, 3, &out_labels, TRUNCATED(info)),
                  CLAIM_ERR_INVALID_ARGUMENT, "smile_context_draw out_info.struct_size 4");
    /* A refused out_info (one byte short) keeps every byte it had. */
    memset(g.bytes, GUARD, sizeof g.bytes);
    {
        const uint32_t short_size = (uint32_t)sizeof(claim_smile_info) - 1;
        memcpy(g.bytes, &short_size, sizeof short_size);
        expect_status(claim_smile_context_draw(ctx, 3, &out_labels,
                                               (claim_smile_info *)(void *)g.bytes),
                      CLAIM_ERR_INVALID_ARGUMENT, "smile_context_draw short out_info");
        CHECK(untouched_from(&g, 4, sizeof(claim_smile_info) + SLACK),
              "a refused out_info is not written");
    }
    claim_smile_context_free(ctx);

    /* claim_aha_segment_stats_measure: labels, segments, params, out. */
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    expect_status(claim_aha_segment_stats_measure(
                      (claim_volume *)at_page_end(&out_labels, sizeof out_labels),
                      (claim_volume *)at_page_end(&out_segments, sizeof out_segments),
                      (claim_aha_params *)at_page_end(&aha, sizeof aha),
                      (claim_aha_segment_stats *)at_page_end(&stats, sizeof stats)),
                  CLAIM_OK, "aha_segment_stats_measure with every struct at a page end");
    expect_status(claim_aha_segment_stats_measure(&out_labels, NULL, &aha, TRUNCATED(stats)),
                  CLAIM_ERR_INVALID_ARGUMENT, "aha_segment_stats_measure out.struct_size 4");
    expect_status(claim_aha_segment_stats_measure(&out_labels, NULL, &aha, &stats), CLAIM_OK,
                  "aha_segment_stats_measure");
    memset(g.bytes, GUARD, sizeof g.bytes);
    {
        const uint32_t short_size = (uint32_t)sizeof(claim_aha_segment_stats) - 8;
        memcpy(g.bytes, &short_size, sizeof short_size);
        expect_status(claim_aha_segment_stats_measure(&out_labels, NULL, &aha,
                                                      (claim_aha_segment_stats *)(void *)g.bytes),
                      CLAIM_ERR_INVALID_ARGUMENT, "aha_segment_stats_measure short out");
        CHECK(untouched_from(&g, 4, sizeof(claim_aha_segment_stats) + SLACK),
              "a refused statistics struct is not written");
    }

    /* Bull's-eye: stats and options (its title pointer NULL). */
    CLAIM_DEFAULT(claim_bullseye_options, &bullseye);
    expect_status(claim_bullseye_render_svg(
                      (claim_aha_segment_stats *)at_page_end(&stats, sizeof stats),
                      (claim_bullseye_options *)at_page_end(&bullseye, sizeof bullseye), NULL,
                      0, &needed),
                  CLAIM_OK, "bullseye_render_svg with every struct at a page end");
    expect_status(claim_bullseye_render_png(
                      (claim_aha_segment_stats *)at_page_end(&stats, sizeof stats),
                      (claim_bullseye_options *)at_page_end(&bullseye, sizeof bullseye), NULL,
                      0, &needed),
                  CLAIM_OK, "bullseye_render_png with every struct at a page end");
    expect_status(claim_bullseye_render_svg(TRUNCATED(stats), &bullseye, svg, 0, &needed),
                  CLAIM_ERR_INVALID_ARGUMENT, "bullseye_render_svg stats.struct_size 4");
    expect_status(claim_bullseye_render_png(&stats, TRUNCATED(bullseye), NULL, 0, &needed),
                  CLAIM_ERR_INVALID_ARGUMENT, "bullseye_render_png options.struct_size 4");

    /* Images: like (create) and out_view (view). */
    expect_status(claim_image_create((claim_volume *)at_page_end(&labels, sizeof labels),
                                     CLAIM_VOXEL_I16, &img),
                  CLAIM_OK, "image_create with like at a page end");
    claim_image_free(img);
    img = NULL;
    expect_status(claim_image_create(TRUNCATED(labels), CLAIM_VOXEL_I16, &img),
                  CLAIM_ERR_INVALID_ARGUMENT, "image_create like.struct_size 4");
    expect_status(claim_image_create(&labels, CLAIM_VOXEL_I16, &img), CLAIM_OK, "image_create");
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    expect_status(claim_image_view(img, (claim_volume *)at_page_end(&view, sizeof view)),
                  CLAIM_OK, "image_view into a struct at a page end");
    expect_status(claim_image_view(img, TRUNCATED(view)), CLAIM_ERR_INVALID_ARGUMENT,
                  "image_view out_view.struct_size 4");
    memset(g.bytes, GUARD, sizeof g.bytes);
    {
        const uint32_t short_size = (uint32_t)sizeof(claim_volume) - 8;
        memcpy(g.bytes, &short_size, sizeof short_size);
        expect_status(claim_image_view(img, (claim_volume *)(void *)g.bytes),
                      CLAIM_ERR_INVALID_ARGUMENT, "image_view short out_view");
        CHECK(untouched_from(&g, 4, sizeof(claim_volume) + SLACK),
              "a refused view is not written");
    }
    claim_image_free(img);

    /* Build info. */
    {
        claim_build_info build;
        memset(&build, 0, sizeof build);
        build.struct_size = sizeof build;
        expect_status(claim_build_info_get((claim_build_info *)at_page_end(&build, sizeof build)),
                      CLAIM_OK, "build_info_get into a struct at a page end");
        expect_status(claim_build_info_get(TRUNCATED(build)), CLAIM_ERR_INVALID_ARGUMENT,
                      "build_info_get out.struct_size 4");
    }
    unmap_all();
    printf("ok   volumes, SMILE, statistics, bull's-eye, images, build info: no access past "
           "struct_size\n");
}

/* ---- diffusion model, synthesis, histogram ---- */

#define NI 16
#define NJ 16
#define NK 2
#define NV (NI * NJ * NK)

static claim_volume small_volume(claim_voxel_type type, void *data)
{
    claim_volume v = synthetic_lv_volume(type, data);
    v.dims[0] = NI;
    v.dims[1] = NJ;
    v.dims[2] = NK;
    return v;
}

static void small_case(uint8_t *labels, float *image)
{
    int i, j, k;
    for (k = 0; k < NK; k++) {
        for (j = 0; j < NJ; j++) {
            for (i = 0; i < NI; i++) {
                const int di = i - 8, dj = j - 8, r2 = di * di + dj * dj;
                const int n = i + NI * (j + NJ * k);
                labels[n] = r2 < 9 ? 1 : r2 < 25 ? (di > 1 ? 3 : 2) : 0;
                image[n] = labels[n] == 3 ? 700.0f : labels[n] == 1 ? 500.0f : 100.0f + (float)(n % 7);
            }
        }
    }
}

static void diffusion_structs(void)
{
    static uint8_t labels[NV];
    static float image[NV], out[NV], x[1 * 1 * 1 * 8 * 8], noise[1 * 1 * 1 * 8 * 8], cond[16];
    const int64_t steps[1] = {5};
    claim_load_options options;
    claim_synthesis_params params;
    claim_label_scheme scheme;
    claim_diffusion_model *model = NULL;
    claim_diffusion_info info;
    claim_volume vi, vl, vo;
    claim_tensor xt, ct, ot;
    float histogram[16];
    char path[512];
    int n;

    snprintf(path, sizeof path, "%s/denoiser/unet2d_weights.safetensors", CLAIM_FIXTURES);
    CLAIM_DEFAULT(claim_load_options, &options);
    expect_status(claim_diffusion_load(path,
                                       (claim_load_options *)at_page_end(&options, sizeof options),
                                       &model),
                  CLAIM_OK, "diffusion_load with options at a page end");
    if (!model) return;
    {
        claim_diffusion_model *none = NULL;
        expect_status(claim_diffusion_load(path, TRUNCATED(options), &none),
                      CLAIM_ERR_INVALID_ARGUMENT, "diffusion_load options.struct_size 4");
    }
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect_status(claim_diffusion_info_get(model,
                                           (claim_diffusion_info *)at_page_end(&info, sizeof info)),
                  CLAIM_OK, "diffusion_info_get into a struct at a page end");
    expect_status(claim_diffusion_info_get(model, TRUNCATED(info)), CLAIM_ERR_INVALID_ARGUMENT,
                  "diffusion_info_get out.struct_size 4");
    /* A caller from before `frames` (24 bytes). */
    expect_status(claim_diffusion_info_get(model, (claim_diffusion_info *)at_page_end(&info, 24)),
                  CLAIM_OK, "diffusion_info_get into a first-release struct at a page end");

    /* Tensors: 80 bytes (a caller from before `dtype`) and the whole struct. */
    for (n = 0; n < 64; n++) x[n] = (float)(n % 9) / 9.0f - 0.5f;
    for (n = 0; n < 16; n++) cond[n] = 1.0f / 16.0f;
    memset(&xt, 0, sizeof xt);
    xt.struct_size = sizeof xt;
    xt.dtype = CLAIM_TENSOR_F32;
    xt.ndim = 5;
    xt.shape[0] = xt.shape[1] = xt.shape[2] = 1;
    xt.shape[3] = xt.shape[4] = 8;
    xt.data = x;
    ot = xt;
    ot.data = noise;
    ct = xt;
    ct.ndim = 2;
    ct.shape[1] = 16;
    ct.data = cond;
    expect_status(claim_diffusion_predict_noise(model, (claim_tensor *)at_page_end(&xt, 80), steps,
                                                (claim_tensor *)at_page_end(&ct, 80),
                                                (claim_tensor *)at_page_end(&ot, 80)),
                  CLAIM_OK, "predict_noise with 80-byte tensors at a page end");
    expect_status(claim_diffusion_predict_noise(model, (claim_tensor *)at_page_end(&xt, sizeof xt),
                                                steps, (claim_tensor *)at_page_end(&ct, sizeof ct),
                                                (claim_tensor *)at_page_end(&ot, sizeof ot)),
                  CLAIM_OK, "predict_noise with whole tensors at a page end");
    expect_status(claim_diffusion_predict_noise(model, TRUNCATED(xt), steps, &ct, &ot),
                  CLAIM_ERR_INVALID_ARGUMENT, "predict_noise x.struct_size 4");
    expect_status(claim_diffusion_predict_noise(model, &xt, steps, TRUNCATED(ct), &ot),
                  CLAIM_ERR_INVALID_ARGUMENT, "predict_noise cond.struct_size 4");
    expect_status(claim_diffusion_predict_noise(model, &xt, steps, &ct, TRUNCATED(ot)),
                  CLAIM_ERR_INVALID_ARGUMENT, "predict_noise out_noise.struct_size 4");

    /* Synthesis: image, labels, params, params->labels, out_image. */
    small_case(labels, image);
    vi = small_volume(CLAIM_VOXEL_F32, image);
    vl = small_volume(CLAIM_VOXEL_U8, labels);
    vo = small_volume(CLAIM_VOXEL_F32, out);
    CLAIM_DEFAULT(claim_label_scheme, &scheme);
    CLAIM_DEFAULT(claim_synthesis_params, &params);
    params.t_start = 2;
    params.jump_length = 1;
    params.jump_n_sample = 1;
    params.crop_size = 16;
    params.labels = (const claim_label_scheme *)at_page_end(&scheme, sizeof scheme);
    expect_status(claim_diffusion_synthesize(
                      model, (claim_volume *)at_page_end(&vi, sizeof vi),
                      (claim_volume *)at_page_end(&vl, sizeof vl),
                      (claim_synthesis_params *)at_page_end(&params, sizeof params), NULL, NULL,
                      (claim_volume *)at_page_end(&vo, sizeof vo)),
                  CLAIM_OK, "diffusion_synthesize with every struct at a page end");
    expect_status(claim_diffusion_synthesize(model, &vi, &vl, TRUNCATED(params), NULL, NULL, &vo),
                  CLAIM_ERR_INVALID_ARGUMENT, "diffusion_synthesize params.struct_size 4");
    {
        claim_synthesis_params bad = params;
        bad.labels = TRUNCATED(scheme);
        expect_status(claim_diffusion_synthesize(model, &vi, &vl, &bad, NULL, NULL, &vo),
                      CLAIM_ERR_INVALID_ARGUMENT, "diffusion_synthesize params->labels 4");
    }
    expect_status(claim_diffusion_synthesize(model, TRUNCATED(vi), &vl, &params, NULL, NULL, &vo),
                  CLAIM_ERR_INVALID_ARGUMENT, "diffusion_synthesize image.struct_size 4");
    expect_status(claim_diffusion_synthesize(model, &vi, &vl, &params, NULL, NULL, TRUNCATED(vo)),
                  CLAIM_ERR_INVALID_ARGUMENT, "diffusion_synthesize out_image.struct_size 4");

    /* A caller from before `channel_count` (200 bytes). */
    expect_status(claim_diffusion_synthesize(model, &vi, &vl,
                                             (claim_synthesis_params *)at_page_end(&params, 200),
                                             NULL, NULL, &vo),
                  CLAIM_OK, "diffusion_synthesize with first-release params at a page end");
    {
        float channels[CLAIM_HISTOGRAM_MAX];
        uint32_t length = 0;
        expect_status(claim_histogram_measure_channels(
                          model, (claim_volume *)at_page_end(&vi, sizeof vi),
                          (claim_volume *)at_page_end(&vl, sizeof vl),
                          (claim_synthesis_params *)at_page_end(&params, 200), channels,
                          CLAIM_HISTOGRAM_MAX, &length),
                      CLAIM_OK, "histogram_measure_channels with first-release params at a page end");
        expect_status(claim_histogram_measure_channels(model, &vi, &vl, TRUNCATED(params), channels,
                                                       CLAIM_HISTOGRAM_MAX, &length),
                      CLAIM_ERR_INVALID_ARGUMENT, "histogram_measure_channels params.struct_size 4");
    }

    /* Histogram: image, labels, scheme. */
    expect_status(claim_histogram_measure((claim_volume *)at_page_end(&vi, sizeof vi),
                                          (claim_volume *)at_page_end(&vl, sizeof vl),
                                          (claim_label_scheme *)at_page_end(&scheme,
                                                                            sizeof scheme),
                                          8, histogram),
                  CLAIM_OK, "histogram_measure with every struct at a page end");
    expect_status(claim_histogram_measure(&vi, &vl, TRUNCATED(scheme), 8, histogram),
                  CLAIM_ERR_INVALID_ARGUMENT, "histogram_measure scheme.struct_size 4");
    expect_status(claim_histogram_measure(&vi, TRUNCATED(vl), NULL, 8, histogram),
                  CLAIM_ERR_INVALID_ARGUMENT, "histogram_measure labels.struct_size 4");
    claim_diffusion_free(model);
    unmap_all();
    printf("ok   diffusion model, tensors, synthesis, histogram: no access past struct_size\n");
}

/* ---- nnU-Net segmenter ---- */

static void segmenter_structs(const char *results)
{
    static float image[NV];
    static uint8_t labels[NV], out[NV];
    static float x[1 * 1 * 32 * 32], logits[1 * 8 * 32 * 32];
    claim_load_options load;
    claim_segmenter_options options;
    claim_segmentation_params params;
    claim_segmenter_info info;
    claim_label_scheme scheme;
    claim_segmenter *model = NULL, *none = NULL;
    claim_volume vi, vo;
    claim_tensor xt, ot;
    int n;

    CLAIM_DEFAULT(claim_load_options, &load);
    CLAIM_DEFAULT(claim_segmenter_options, &options);
    options.fold_count = 1;
    options.folds[0] = 0;
    expect_status(claim_segmenter_load(
                      results, (claim_load_options *)at_page_end(&load, sizeof load),
                      (claim_segmenter_options *)at_page_end(&options, sizeof options), &model),
                  CLAIM_OK, "segmenter_load with both option structs at a page end");
    if (!model) return;
    expect_status(claim_segmenter_load(results, TRUNCATED(load), &options, &none),
                  CLAIM_ERR_INVALID_ARGUMENT, "segmenter_load load_options.struct_size 4");
    expect_status(claim_segmenter_load(results, &load, TRUNCATED(options), &none),
                  CLAIM_ERR_INVALID_ARGUMENT, "segmenter_load segmenter_options.struct_size 4");
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    {
        claim_segmenter_info *at_end = (claim_segmenter_info *)at_page_end(&info, sizeof info);
        expect_status(claim_segmenter_info_get(model, at_end), CLAIM_OK,
                      "segmenter_info_get into a struct at a page end");
        memcpy(&info, at_end, sizeof info);
    }
    expect_status(claim_segmenter_info_get(model, TRUNCATED(info)), CLAIM_ERR_INVALID_ARGUMENT,
                  "segmenter_info_get out.struct_size 4");

    /* Logits of one 32 x 32 slice (2-D model). */
    if (info.spatial_dims == 2 && info.input_channels == 1 && info.num_classes <= 8) {
        for (n = 0; n < 32 * 32; n++) x[n] = (float)(n % 13) / 13.0f;
        memset(&xt, 0, sizeof xt);
        xt.struct_size = sizeof xt;
        xt.dtype = CLAIM_TENSOR_F32;
        xt.ndim = 4;
        xt.shape[0] = xt.shape[1] = 1;
        xt.shape[2] = xt.shape[3] = 32;
        xt.data = x;
        ot = xt;
        ot.shape[1] = info.num_classes;
        ot.data = logits;
        expect_status(claim_segmenter_predict_logits(model, (claim_tensor *)at_page_end(&xt, 80),
                                                     (claim_tensor *)at_page_end(&ot, sizeof ot)),
                      CLAIM_OK, "predict_logits with tensors at a page end");
        expect_status(claim_segmenter_predict_logits(model, TRUNCATED(xt), &ot),
                      CLAIM_ERR_INVALID_ARGUMENT, "predict_logits x.struct_size 4");
        expect_status(claim_segmenter_predict_logits(model, &xt, TRUNCATED(ot)),
                      CLAIM_ERR_INVALID_ARGUMENT, "predict_logits out_logits.struct_size 4");
    } else {
        CHECK(0, "the 2-D fixture is a one-channel 2-D model with at most 8 classes");
    }

    /* Segmentation: image, params, params->labels, out_labels. */
    small_case(labels, image);
    vi = small_volume(CLAIM_VOXEL_F32, image);
    vo = small_volume(CLAIM_VOXEL_U8, out);
    CLAIM_DEFAULT(claim_label_scheme, &scheme);
    CLAIM_DEFAULT(claim_segmentation_params, &params);
    params.mirroring = 0;
    params.step_size = 1.0f;
    params.labels = (const claim_label_scheme *)at_page_end(&scheme, sizeof scheme);
    expect_status(claim_segmenter_segment(
                      model, (claim_volume *)at_page_end(&vi, sizeof vi),
                      (claim_segmentation_params *)at_page_end(&params, sizeof params), NULL,
                      NULL, (claim_volume *)at_page_end(&vo, sizeof vo)),
                  CLAIM_OK, "segmenter_segment with every struct at a page end");
    expect_status(claim_segmenter_segment(model, &vi, TRUNCATED(params), NULL, NULL, &vo),
                  CLAIM_ERR_INVALID_ARGUMENT, "segmenter_segment params.struct_size 4");
    {
        claim_segmentation_params bad = params;
        bad.labels = TRUNCATED(scheme);
        expect_status(claim_segmenter_segment(model, &vi, &bad, NULL, NULL, &vo),
                      CLAIM_ERR_INVALID_ARGUMENT, "segmenter_segment params->labels 4");
    }
    expect_status(claim_segmenter_segment(model, TRUNCATED(vi), &params, NULL, NULL, &vo),
                  CLAIM_ERR_INVALID_ARGUMENT, "segmenter_segment image.struct_size 4");
    expect_status(claim_segmenter_segment(model, &vi, &params, NULL, NULL, TRUNCATED(vo)),
                  CLAIM_ERR_INVALID_ARGUMENT, "segmenter_segment out_labels.struct_size 4");
    claim_segmenter_free(model);
    unmap_all();
    printf("ok   segmenter, logits, segmentation: no access past struct_size\n");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        printf("usage: %s SCRATCH NNUNET_RESULTS_2D\n", argv[0]);
        return 2;
    }
    defaults();
    smile_structs();
    diffusion_structs();
    segmenter_structs(argv[2]);
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
