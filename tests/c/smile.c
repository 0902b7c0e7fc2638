/*
 * SMILE through the C API, as an outside C99 program sees it: AHA
 * parcellation, scar masks, per-segment statistics and the bull's-eye, on
 * a synthetic LV always and on the AHA atlas when $CLAIM_ATLAS_DIR is set
 * (AHA17_model_ED.nii.gz: 1-17 segments, 21 LV blood pool, 24 RV). Every
 * label map lives in a buffer this program allocates.
 *
 * Usage: smile <scratch-dir>. Prints one line per check; exits 0 only when
 * every check passed.
 */
#include "claim.h"
#include <stddef.h>
#include "synthetic_lv.h"

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
    CHECK(strcmp(claim_last_error_message(), "") == 0, "message is empty after a success");
    printf("ok   %s\n", what);
}

/* A refused call: the expected status, a message containing `needle`. */
static void expect_error(claim_status status, claim_status expected, const char *needle,
                         const char *what)
{
    const char *message = claim_last_error_message();
    checks++;
    if (status != expected || message == NULL || message[0] == '\0' ||
        strstr(message, needle) == NULL) {
        failures++;
        fprintf(stderr, "FAIL %s: got %s (\"%s\"), expected %s with \"%s\" in the message\n",
                what, claim_status_str(status), message ? message : "(null)",
                claim_status_str(expected), needle);
        return;
    }
    printf("ok   %-46s %s\n", what, message);
}

/* The guard byte refused calls must leave in output buffers. */
#define UNTOUCHED 0xAB

static int all_bytes_are(const uint8_t *bytes, size_t count, uint8_t value)
{
    size_t n;
    for (n = 0; n < count; n++) {
        if (bytes[n] != value) {
            return 0;
        }
    }
    return 1;
}

static size_t voxel_count(const claim_volume *v)
{
    return (size_t)(v->dims[0] * v->dims[1] * v->dims[2]);
}

/* Voxel n of a volume of any dtype, as a double. */
static double voxel_value(const claim_volume *v, size_t n)
{
    switch (v->voxel_type) {
    case CLAIM_VOXEL_U8: return ((const uint8_t *)v->data)[n];
    case CLAIM_VOXEL_I16: return ((const int16_t *)v->data)[n];
    case CLAIM_VOXEL_U16: return ((const uint16_t *)v->data)[n];
    case CLAIM_VOXEL_I32: return ((const int32_t *)v->data)[n];
    case CLAIM_VOXEL_F32: return ((const float *)v->data)[n];
    default: return -1.0;
    }
}

/* A label map in a buffer owned by this program. */
struct heart {
    const char *name;
    claim_volume labels; /* u8 view of `voxels` */
    uint8_t *voxels;
    size_t count;
    claim_label_scheme scheme;
    const uint8_t *reference_segments; /* the atlas's own segments, or NULL */
};

static int is_myocardium(const claim_label_scheme *s, int label)
{
    return label == s->myocardium || label == s->scar || label == s->mvo;
}

/* An empty u8 volume with the dims and geometry of `like`, bytes UNTOUCHED. */
static claim_volume guarded_output(const claim_volume *like, uint8_t **buffer)
{
    claim_volume out = *like;
    *buffer = (uint8_t *)malloc(voxel_count(like));
    if (*buffer != NULL) {
        memset(*buffer, UNTOUCHED, voxel_count(like));
    }
    out.voxel_type = CLAIM_VOXEL_U8;
    out.data = *buffer;
    out.spacing[0] = out.spacing[1] = out.spacing[2] = 0.0; /* written by the library */
    return out;
}

static void check_parcellation(const struct heart *h, uint8_t *segments)
{
    claim_aha_params params;
    claim_volume out = h->labels;
    size_t n, wrong = 0, agree = 0, myocardium = 0;
    char what[160];

    CLAIM_DEFAULT(claim_aha_params, &params);
    params.labels = &h->scheme;
    out.data = segments;
    out.spacing[0] = 0.0;
    snprintf(what, sizeof what, "%s: claim_aha_parcellate", h->name);
    expect_ok(claim_aha_parcellate(&h->labels, &params, &out), what);
    CHECK(out.spacing[0] == h->labels.spacing[0] && out.origin[2] == h->labels.origin[2],
          "the segment map gets the geometry of the labels");
    for (n = 0; n < h->count; n++) {
        const int myo = is_myocardium(&h->scheme, h->voxels[n]);
        if (myo != (segments[n] >= 1 && segments[n] <= 17) || (!myo && segments[n] != 0)) {
            wrong++;
        }
        if (myo) {
            myocardium++;
            if (h->reference_segments != NULL && segments[n] == h->reference_segments[n]) {
                agree++;
            }
        }
    }
    CHECK(myocardium > 0 && wrong == 0,
          "every myocardium voxel gets a segment 1..17, every other voxel 0");
    printf("ok   %s: %lu myocardium voxels, all in 1..17\n", h->name, (unsigned long)myocardium);
    if (h->reference_segments != NULL) {
        const double fraction = (double)agree / (double)myocardium;
        printf("     %s: %.3f of the myocardium in the atlas's own segment\n", h->name, fraction);
        /* A flipped axis or a lost direction matrix would put most voxels
         * in the wrong segment. */
        CHECK(fraction >= 0.75, "parcellation agrees with the atlas's segments");
    }
}

static claim_smile_params lad_params(const struct heart *h, double burden)
{
    claim_smile_params params;
    CLAIM_DEFAULT(claim_smile_params, &params);
    params.pattern = CLAIM_PATTERN_ISCHEMIC;
    params.territory = CLAIM_TERRITORY_LAD;
    params.burden = burden;
    params.labels = &h->scheme;
    return params;
}

static void check_generation(const struct heart *h, const uint8_t *segments)
{
    const double burden = 0.2;
    claim_smile_params params = lad_params(h, burden);
    uint8_t *first = (uint8_t *)malloc(h->count);
    uint8_t *second = (uint8_t *)malloc(h->count);
    uint8_t *in_place = (uint8_t *)malloc(h->count);
    int32_t *wide = (int32_t *)malloc(h->count * sizeof(int32_t));
    claim_volume out, shared, wide_out, segment_view;
    claim_aha_segment_stats stats;
    claim_smile_context *ctx = NULL;
    claim_smile_info info;
    size_t n, outside = 0, lesion = 0, myocardium = 0, mismatched = 0;
    double segment_sum = 0.0;
    int s;
    char what[160];

    if (first == NULL || second == NULL || in_place == NULL || wide == NULL) {
        CHECK(0, "allocation");
        free(first);
        free(second);
        free(in_place);
        free(wide);
        return;
    }
    out = h->labels;
    out.data = first;
    snprintf(what, sizeof what, "%s: claim_smile_generate seed 7 (LAD, burden 0.2)", h->name);
    expect_ok(claim_smile_generate(&h->labels, &params, 7, &out), what);
    out.data = second;
    expect_ok(claim_smile_generate(&h->labels, &params, 7, &out), "seed 7 again");
    CHECK(memcmp(first, second, h->count) == 0, "the same seed gives the same mask");
    expect_ok(claim_smile_generate(&h->labels, &params, 8, &out), "seed 8");
    CHECK(memcmp(first, second, h->count) != 0, "another seed gives another mask");

    for (n = 0; n < h->count; n++) {
        const int was_myo = is_myocardium(&h->scheme, h->voxels[n]);
        const int label = first[n];
        if (!was_myo && label != h->voxels[n]) {
            outside++;
        }
        if (was_myo) {
            myocardium++;
            if (label == h->scheme.scar || label == h->scheme.mvo) {
                lesion++;
            } else if (label != h->scheme.myocardium) {
                outside++;
            }
        }
    }
    CHECK(outside == 0, "scar only on myocardium; every other voxel unchanged");
    printf("     %s: %lu lesion voxels of %lu myocardium (%.3f)\n", h->name, (unsigned long)lesion,
           (unsigned long)myocardium, (double)lesion / (double)myocardium);

    /* Statistics of the mask over the parcellation done before. */
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    segment_view = h->labels;
    segment_view.data = (void *)segments;
    out.data = first;
    {
        claim_aha_params aha;
        CLAIM_DEFAULT(claim_aha_params, &aha);
        aha.labels = &h->scheme;
        expect_ok(claim_aha_segment_stats_measure(&out, &segment_view, &aha, &stats), "claim_aha_segment_stats_measure");
        CHECK(fabs(stats.burden - burden) <= 0.02, "burden within 0.02 of the request");
        CHECK(fabs(stats.burden - (double)lesion / (double)myocardium) < 1e-9,
              "stats burden = lesion voxels / myocardium voxels");
        for (s = 1; s <= CLAIM_AHA_SEGMENT_COUNT; s++) {
            segment_sum += stats.scar_ml[s];
        }
        CHECK(fabs(segment_sum + stats.scar_ml[0] - stats.total_scar_ml) < 1e-9,
              "per-segment scar adds up to the total");
        CHECK(stats.scar_ml[1] + stats.scar_ml[7] > 0.0,
              "an LAD scar reaches segment 1 or 7");
        printf("     %s: burden %.4f, scar %.2f mL of %.2f mL\n", h->name, stats.burden,
               stats.total_scar_ml, stats.total_myocardium_ml);

        /* Without a segment map the call parcellates itself: same numbers. */
        {
            claim_aha_segment_stats again;
            memset(&again, 0, sizeof again);
            again.struct_size = sizeof again;
            expect_ok(claim_aha_segment_stats_measure(&out, NULL, &aha, &again),
                      "claim_aha_segment_stats_measure without a segment map");
            CHECK(memcmp(&again, &stats, sizeof stats) == 0,
                  "same statistics as with the precomputed segments");
            /* Every byte is written, padding included (zeros): a caller may
               hash or compare the struct (valgrind checks the rest). */
            memset(&again, 0xAA, sizeof again);
            again.struct_size = sizeof again;
            expect_ok(claim_aha_segment_stats_measure(&out, NULL, &aha, &again),
                      "claim_aha_segment_stats_measure into a 0xAA-filled struct");
            {
                const unsigned char *bytes = (const unsigned char *)&again;
                size_t b, pad_end = offsetof(claim_aha_segment_stats, myocardium_ml);
                int zero = 1;
                for (b = sizeof(uint32_t); b < pad_end; b++) zero &= bytes[b] == 0;
                CHECK(zero, "the padding after struct_size is written as zeros");
            }
        }
    }

    /* The output may be the input buffer, even through the same struct. */
    memcpy(in_place, h->voxels, h->count);
    shared = h->labels;
    shared.data = in_place;
    expect_ok(claim_smile_generate(&shared, &params, 7, &shared), "generate in place");
    CHECK(memcmp(in_place, first, h->count) == 0, "in place gives the same mask");

    /* Any output dtype that holds the labels: int32 here. */
    wide_out = h->labels;
    wide_out.voxel_type = CLAIM_VOXEL_I32;
    wide_out.data = wide;
    expect_ok(claim_smile_generate(&h->labels, &params, 7, &wide_out), "generate into int32");
    for (n = 0; n < h->count; n++) {
        if (wide[n] != first[n]) {
            mismatched++;
        }
    }
    CHECK(mismatched == 0, "int32 output holds the same labels");

    /* A context draws the same masks and says what it drew. */
    expect_ok(claim_smile_context_create(&h->labels, NULL, &params, &ctx),
              "claim_smile_context_create");
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    out.data = second;
    expect_ok(claim_smile_context_draw(ctx, 7, &out, &info), "claim_smile_context_draw seed 7");
    CHECK(memcmp(first, second, h->count) == 0, "context and one-shot draws agree");
    CHECK(info.seed == 7 && info.pattern == CLAIM_PATTERN_ISCHEMIC &&
              info.territory == CLAIM_TERRITORY_LAD,
          "info: seed, pattern, territory");
    CHECK(fabs(info.burden - (double)lesion / (double)myocardium) < 1e-9 &&
              info.burden_target == burden,
          "info: burden reached and aimed at");
    CHECK(info.segments_chosen_count >= 1 && info.segments_chosen_count <= 17,
          "info: segments chosen");
    CHECK(info.scar_voxels + info.mvo_voxels == lesion, "info: voxel counts");
    claim_smile_context_free(ctx);

    /* The atlas's own segments drive a context too. */
    if (h->reference_segments != NULL) {
        claim_volume reference = h->labels;
        reference.data = (void *)h->reference_segments;
        ctx = NULL;
        expect_ok(claim_smile_context_create(&h->labels, &reference, &params, &ctx),
                  "context on the atlas's own segments");
        out.data = second;
        expect_ok(claim_smile_context_draw(ctx, 3, &out, NULL), "draw on the atlas's segments");
        claim_smile_context_free(ctx);
    }

    /* The bull's-eye of the statistics. */
    {
        claim_bullseye_options options;
        size_t needed = 0;
        char *svg;
        CLAIM_DEFAULT(claim_bullseye_options, &options);
        options.title = "LAD, seed 7";
        expect_ok(claim_bullseye_render_svg(&stats, &options, NULL, 0, &needed), "bull's-eye size query");
        svg = (char *)malloc(needed);
        if (svg != NULL) {
            expect_ok(claim_bullseye_render_svg(&stats, &options, svg, needed, &needed),
                      "bull's-eye SVG");
            CHECK(strncmp(svg, "<svg", 4) == 0 && strlen(svg) + 1 == needed,
                  "an SVG document of the announced size");
            free(svg);
        }
    }
    free(first);
    free(second);
    free(in_place);
    free(wide);
}

static void check_heart(const struct heart *h)
{
    uint8_t *segments = (uint8_t *)malloc(h->count);
    if (segments == NULL) {
        CHECK(0, "allocation");
        return;
    }
    check_parcellation(h, segments);
    check_generation(h, segments);
    free(segments);
}

/* Refusals on the synthetic heart: each gives its status and a message and
 * leaves the output buffer as it was. */
static void check_errors(const struct heart *h)
{
    claim_smile_params params = lad_params(h, 0.2);
    claim_smile_params bad;
    claim_aha_params aha;
    claim_volume labels_bad, out, small;
    claim_aha_segment_stats stats;
    uint8_t *buffer = NULL;
    uint8_t *changed = (uint8_t *)malloc(h->count);
    uint8_t *original = (uint8_t *)malloc(h->count);
    uint8_t tiny[8];
    claim_smile_context *ctx = (claim_smile_context *)&failures; /* any non-NULL value */
    size_t n;

    CLAIM_DEFAULT(claim_aha_params, &aha);
    aha.labels = &h->scheme;
    out = guarded_output(&h->labels, &buffer);
    if (buffer == NULL || changed == NULL || original == NULL) {
        CHECK(0, "allocation");
        free(buffer);
        free(changed);
        free(original);
        return;
    }
    memcpy(original, h->voxels, h->count);

    expect_error(claim_smile_generate(NULL, &params, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "labels must not be NULL", "generate(NULL labels)");
    expect_error(claim_smile_generate(&h->labels, NULL, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params must not be NULL", "generate(NULL params)");
    expect_error(claim_smile_generate(&h->labels, &params, 7, NULL), CLAIM_ERR_INVALID_ARGUMENT,
                 "out_labels must not be NULL", "generate(NULL out_labels)");
    expect_error(claim_aha_parcellate(NULL, &aha, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "labels must not be NULL", "aha_parcellate(NULL labels)");
    expect_error(claim_aha_parcellate(&h->labels, NULL, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params must not be NULL", "aha_parcellate(NULL params)");
    expect_error(claim_aha_segment_stats_measure(&h->labels, NULL, &aha, NULL), CLAIM_ERR_INVALID_ARGUMENT,
                 "out must not be NULL", "aha_segment_stats_measure(NULL out)");

    bad = params;
    bad.struct_size = 0;
    expect_error(claim_smile_generate(&h->labels, &bad, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.struct_size", "params.struct_size 0");
    labels_bad = h->labels;
    labels_bad.struct_size = 0;
    expect_error(claim_smile_generate(&labels_bad, &params, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "labels.struct_size", "labels.struct_size 0");
    memset(&stats, 0, sizeof stats);
    expect_error(claim_aha_segment_stats_measure(&h->labels, NULL, &aha, &stats), CLAIM_ERR_INVALID_ARGUMENT,
                 "out.struct_size", "aha_segment_stats_measure out.struct_size 0");

    bad = params;
    bad.burden = 1.5;
    expect_error(claim_smile_generate(&h->labels, &bad, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.burden", "burden 1.5");
    bad.burden = NAN;
    expect_error(claim_smile_generate(&h->labels, &bad, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.burden", "burden NaN");
    bad = params;
    bad.pattern = 17;
    expect_error(claim_smile_generate(&h->labels, &bad, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "params.pattern", "pattern 17");
    bad = params;
    bad.pattern = CLAIM_PATTERN_MIDWALL; /* with territory LAD: ischaemic only */
    expect_error(claim_smile_generate(&h->labels, &bad, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "territory", "territory with the mid-wall pattern");

    /* No myocardium: every myocardium voxel turned into cavity. */
    for (n = 0; n < h->count; n++) {
        changed[n] = h->voxels[n] == h->scheme.myocardium ? (uint8_t)h->scheme.lv_cavity
                                                           : h->voxels[n];
    }
    labels_bad = h->labels;
    labels_bad.data = changed;
    expect_error(claim_smile_generate(&labels_bad, &params, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "myocardium", "a map without myocardium");
    expect_error(claim_aha_parcellate(&labels_bad, &aha, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "myocardium", "aha_parcellate of a map without myocardium");

    /* No LV cavity: the cavity turned into background. */
    for (n = 0; n < h->count; n++) {
        changed[n] = h->voxels[n] == h->scheme.lv_cavity ? 0 : h->voxels[n];
    }
    expect_error(claim_smile_generate(&labels_bad, &params, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "cavity", "a map without LV cavity");

    /* An unknown label: 9 in one voxel. */
    memcpy(changed, h->voxels, h->count);
    changed[h->count / 2] = 9;
    expect_error(claim_smile_generate(&labels_bad, &params, 7, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "9", "a label (9) outside the scheme");
    expect_error(claim_aha_parcellate(&labels_bad, &aha, &out), CLAIM_ERR_INVALID_ARGUMENT, "9",
                 "aha_parcellate with a label (9) outside the scheme");

    /* Output dims that differ from the input's. */
    memset(tiny, UNTOUCHED, sizeof tiny);
    small = out;
    small.dims[0] = small.dims[1] = small.dims[2] = 2;
    small.data = tiny;
    expect_error(claim_smile_generate(&h->labels, &params, 7, &small), CLAIM_ERR_INVALID_ARGUMENT,
                 "out_labels.dims: expected 48", "mismatched output dims");
    expect_error(claim_aha_parcellate(&h->labels, &aha, &small), CLAIM_ERR_INVALID_ARGUMENT,
                 "out_segments.dims: expected 48", "aha_parcellate with mismatched output dims");
    CHECK(all_bytes_are(tiny, sizeof tiny, UNTOUCHED), "the small output is untouched");

    expect_error(claim_smile_context_create(&h->labels, NULL, &bad, &ctx),
                 CLAIM_ERR_INVALID_ARGUMENT, "territory", "context with bad params");
    CHECK(ctx == NULL, "*out is NULL after a failed context_create");
    expect_error(claim_smile_context_draw(NULL, 7, &out, NULL), CLAIM_ERR_INVALID_ARGUMENT,
                 "ctx must not be NULL", "context_draw(NULL ctx)");
    claim_smile_context_free(NULL);

    CHECK(all_bytes_are(buffer, h->count, UNTOUCHED), "refused calls left the output untouched");
    CHECK(out.spacing[0] == 0.0, "refused calls left the output geometry untouched");
    CHECK(memcmp(original, h->voxels, h->count) == 0, "refused calls left the input untouched");
    free(buffer);
    free(changed);
    free(original);
}

/* The atlas as an EMIDEC-with-RV map in a buffer of ours, plus its segments. */
static int load_atlas(struct heart *h, uint8_t **segments)
{
    const char *dir = getenv("CLAIM_ATLAS_DIR");
    char path[1024];
    claim_image *img = NULL;
    claim_volume view;
    size_t n;

    if (dir == NULL || dir[0] == '\0') {
        printf("skipped: atlas checks (CLAIM_ATLAS_DIR not set)\n");
        return 0;
    }
    snprintf(path, sizeof path, "%s/AHA17_model_ED.nii.gz", dir);
    expect_ok(claim_image_read(path, &img), "read AHA17_model_ED.nii.gz");
    if (img == NULL) {
        return 0;
    }
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    expect_ok(claim_image_view(img, &view), "view of the atlas");
    CLAIM_DEFAULT(claim_label_scheme, &h->scheme);
    h->scheme.rv = 5;
    h->name = "atlas";
    h->count = voxel_count(&view);
    h->voxels = (uint8_t *)malloc(h->count);
    *segments = (uint8_t *)malloc(h->count);
    if (h->voxels == NULL || *segments == NULL) {
        CHECK(0, "allocation");
        claim_image_free(img);
        return 0;
    }
    for (n = 0; n < h->count; n++) {
        const double v = voxel_value(&view, n);
        uint8_t label = 0;
        if (v >= 1.0 && v <= 17.0) {
            label = (uint8_t)h->scheme.myocardium;
        } else if (v == 21.0) {
            label = (uint8_t)h->scheme.lv_cavity;
        } else if (v == 24.0) {
            label = (uint8_t)h->scheme.rv;
        }
        h->voxels[n] = label;
        (*segments)[n] = (v >= 1.0 && v <= 17.0) ? (uint8_t)v : 0;
    }
    h->labels = view; /* the atlas geometry */
    h->labels.voxel_type = CLAIM_VOXEL_U8;
    h->labels.data = h->voxels;
    h->reference_segments = *segments;
    claim_image_free(img);
    return 1;
}

int main(int argc, char **argv)
{
    struct heart synthetic;
    uint8_t synthetic_voxels[SYNTHETIC_LV_VOXELS];
    struct heart atlas;
    uint8_t *atlas_segments = NULL;

    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    memset(&synthetic, 0, sizeof synthetic);
    synthetic.name = "synthetic LV";
    CLAIM_DEFAULT(claim_label_scheme, &synthetic.scheme);
    synthetic.scheme.rv = 5;
    synthetic_lv_labels(&synthetic.scheme, synthetic_voxels);
    synthetic.voxels = synthetic_voxels;
    synthetic.count = SYNTHETIC_LV_VOXELS;
    synthetic.labels = synthetic_lv_volume(CLAIM_VOXEL_U8, synthetic_voxels);

    check_heart(&synthetic);
    check_errors(&synthetic);

    memset(&atlas, 0, sizeof atlas);
    if (load_atlas(&atlas, &atlas_segments)) {
        check_heart(&atlas);
    }
    free(atlas.voxels);
    free(atlas_segments);

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
