/*
 * An outside C99 program written only against the names of the C API
 * design (claim.h): file round trips with geometry, and clean errors for
 * bad input. Usage: outside_program <scratch-dir>; $CLAIM_ATLAS_DIR, when
 * set, holds AHA17_model_ED.nii.gz for the atlas checks.
 *
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
        }                                                                       \
    } while (0)

static const char *scratch_dir;

static void scratch_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", scratch_dir, name);
}

/* A failing call must give a non-OK status, a non-empty message and no handle. */
static void expect_error(claim_status status, claim_status expected, const char *what)
{
    const char *message = claim_last_error_message();
    checks++;
    if (status == CLAIM_OK || message == NULL || message[0] == '\0' ||
        (expected != CLAIM_OK && status != expected)) {
        failures++;
        fprintf(stderr, "FAIL %s: got %s (\"%s\"), expected %s with a message\n", what,
                claim_status_str(status), message ? message : "(null)",
                expected != CLAIM_OK ? claim_status_str(expected) : "an error");
        return;
    }
    printf("ok   %-44s %s: %s\n", what, claim_status_str(status), message);
}

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

static size_t dtype_size(claim_voxel_type dtype)
{
    switch (dtype) {
    case CLAIM_VOXEL_U8: return 1;
    case CLAIM_VOXEL_I16:
    case CLAIM_VOXEL_U16: return 2;
    case CLAIM_VOXEL_I32:
    case CLAIM_VOXEL_F32: return 4;
    default: return 0;
    }
}

static size_t voxel_bytes(const claim_volume *v)
{
    return (size_t)(v->dims[0] * v->dims[1] * v->dims[2]) * dtype_size(v->voxel_type);
}

static int close_to(double a, double b)
{
    return fabs(a - b) <= 1e-4;
}

static claim_volume shaped(uint64_t ni, uint64_t nj, uint64_t nk)
{
    claim_volume v;
    int a;
    memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.voxel_type = CLAIM_VOXEL_F32;
    v.dims[0] = ni;
    v.dims[1] = nj;
    v.dims[2] = nk;
    v.spacing[0] = 0.75;
    v.spacing[1] = 0.8;
    v.spacing[2] = 6.0;
    v.origin[0] = 12.5;
    v.origin[1] = -30.0;
    v.origin[2] = 4.25;
    for (a = 0; a < 3; a++) {
        v.direction[a * 3 + a] = 1.0;
    }
    v.direction[4] = -1.0; /* j runs towards anterior, as in many scans */
    return v;
}

/* Reads `path`, checking it matches `expected` (geometry within 1e-6,
 * voxels byte for byte). */
static void expect_same_file_contents(const char *path, const claim_volume *expected,
                                      const char *what)
{
    claim_image *again = NULL;
    claim_volume view;
    int a;
    expect_ok(claim_image_read(path, &again), what);
    if (again == NULL) {
        return;
    }
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    expect_ok(claim_image_view(again, &view), "view of the re-read image");
    CHECK(view.voxel_type == expected->voxel_type, "re-read dtype unchanged");
    for (a = 0; a < 3; a++) {
        CHECK(view.dims[a] == expected->dims[a], "re-read dims unchanged");
        CHECK(fabs(view.spacing[a] - expected->spacing[a]) <= 1e-6, "re-read spacing unchanged");
        CHECK(fabs(view.origin[a] - expected->origin[a]) <= 1e-6, "re-read origin unchanged");
    }
    for (a = 0; a < 9; a++) {
        CHECK(fabs(view.direction[a] - expected->direction[a]) <= 1e-6,
              "re-read direction unchanged");
    }
    if (view.voxel_type == expected->voxel_type && view.dims[0] == expected->dims[0] &&
        view.dims[1] == expected->dims[1] && view.dims[2] == expected->dims[2]) {
        CHECK(memcmp(view.data, expected->data, voxel_bytes(expected)) == 0,
              "re-read voxels unchanged (memcmp)");
    }
    claim_image_free(again);
}

/* Copies the first `keep` bytes of `from` to `to`; returns 0 on success. */
static int copy_prefix(const char *from, const char *to, long keep)
{
    FILE *in = fopen(from, "rb");
    FILE *out;
    char buffer[4096];
    long left = keep;
    if (in == NULL) {
        return -1;
    }
    out = fopen(to, "wb");
    if (out == NULL) {
        fclose(in);
        return -1;
    }
    while (left > 0) {
        size_t want = left < (long)sizeof buffer ? (size_t)left : sizeof buffer;
        size_t got = fread(buffer, 1, want, in);
        if (got == 0) {
            break;
        }
        fwrite(buffer, 1, got, out);
        left -= (long)got;
    }
    fclose(in);
    fclose(out);
    return 0;
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long size;
    if (f == NULL) {
        return -1;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    return size;
}

static void write_random_bytes(const char *path, size_t count, uint32_t seed)
{
    FILE *f = fopen(path, "wb");
    size_t n;
    if (f == NULL) {
        return;
    }
    for (n = 0; n < count; n++) {
        seed = seed * 1664525u + 1013904223u; /* Numerical Recipes LCG */
        fputc((int)(seed >> 24), f);
    }
    fclose(f);
}

static void check_versions_and_names(void)
{
    claim_label_scheme labels;
    CHECK(claim_abi_version() == CLAIM_ABI_VERSION, "library ABI matches the header");
    CHECK(CLAIM_ABI_VERSION == ((CLAIM_ABI_VERSION_MAJOR << 16) | CLAIM_ABI_VERSION_MINOR),
          "ABI version is major << 16 | minor");
    CHECK(strlen(claim_version_string()) > 0, "version string");
    CHECK(strcmp(claim_status_str(CLAIM_OK), "CLAIM_OK") == 0, "status name of CLAIM_OK");
    CHECK(strcmp(claim_status_str(CLAIM_ERR_IO), "CLAIM_ERR_IO") == 0, "status name of IO");
    CHECK(strcmp(claim_status_str(12345), "CLAIM_ERR_UNKNOWN") == 0, "unknown status name");
    CHECK(CLAIM_ERR_INVALID_ARGUMENT == 1 && CLAIM_ERR_INTERNAL == 9, "status numbers");
    CHECK(CLAIM_VOXEL_U8 == 0 && CLAIM_VOXEL_F32 == 4, "voxel type numbers");
    CHECK(sizeof(claim_volume) == 160, "claim_volume layout of the first release");
    CHECK(CLAIM_ABI_VERSION_MAJOR == 2 && (claim_abi_version() >> 16) == 2, "ABI 2.x");
    CHECK(strcmp(claim_last_error_message(), "") == 0, "no message before any failure");

    memset(&labels, 0x7f, sizeof labels);
    CLAIM_DEFAULT(claim_label_scheme, &labels);
    CHECK(labels.struct_size == sizeof labels, "label scheme struct_size");
    CHECK(labels.lv_cavity == 1 && labels.myocardium == 2 && labels.scar == 3 &&
              labels.mvo == 4 && labels.rv == -1,
          "label scheme defaults to EMIDEC without RV");
    claim_label_scheme_default(NULL, sizeof(claim_label_scheme));
    printf("ok   versions %s (ABI 0x%08x), status names, label scheme defaults\n",
           claim_version_string(), (unsigned)claim_abi_version());
}

/* Creates an image, fills it through its view, writes and re-reads it.
 * Returns the path of the written file in `written`. */
static void check_create_write_read(char *written, size_t size)
{
    claim_volume like = shaped(17, 12, 5);
    claim_image *img = NULL;
    claim_volume view;
    float *voxels;
    size_t n, count;

    like.data = NULL; /* allowed: only dims and geometry are read */
    expect_ok(claim_image_create(&like, CLAIM_VOXEL_F32, &img), "create 17x12x5 f32");
    if (img == NULL) {
        return;
    }
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    expect_ok(claim_image_view(img, &view), "view of the created image");
    CHECK(view.voxel_type == CLAIM_VOXEL_F32, "created dtype");
    CHECK(view.dims[0] == 17 && view.dims[1] == 12 && view.dims[2] == 5, "created dims");
    CHECK(view.spacing[1] == 0.8 && view.origin[2] == 4.25 && view.direction[4] == -1.0,
          "created geometry is that of `like`");
    count = 17 * 12 * 5;
    voxels = (float *)view.data;
    CHECK(voxels != NULL, "view data");
    if (voxels == NULL) {
        claim_image_free(img);
        return;
    }
    for (n = 0; n < count; n++) {
        CHECK(voxels[n] == 0.0f, "created image is zero-filled");
        voxels[n] = (float)n * 0.25f - 100.0f;
    }

    scratch_path(written, size, "created.nii.gz");
    expect_ok(claim_image_write(img, written), "write created.nii.gz");
    expect_same_file_contents(written, &view, "re-read created.nii.gz");
    {
        char plain[1024];
        scratch_path(plain, sizeof plain, "created.nii");
        expect_ok(claim_image_write(img, plain), "write created.nii (uncompressed)");
        expect_same_file_contents(plain, &view, "re-read created.nii");
    }
    claim_image_free(img);
}

static void check_atlas(char *written, size_t size)
{
    const char *dir = getenv("CLAIM_ATLAS_DIR");
    char path[1024];
    claim_image *img = NULL;
    claim_volume view;

    if (dir == NULL || dir[0] == '\0') {
        printf("skipped: atlas checks (CLAIM_ATLAS_DIR not set)\n");
        return;
    }
    snprintf(path, sizeof path, "%s/AHA17_model_ED.nii.gz", dir);
    expect_ok(claim_image_read(path, &img), "read AHA17_model_ED.nii.gz");
    if (img == NULL) {
        return;
    }
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    expect_ok(claim_image_view(img, &view), "view of the atlas");
    CHECK(view.dims[0] == 140 && view.dims[1] == 140 && view.dims[2] == 56,
          "atlas dims 140x140x56");
    CHECK(close_to(view.spacing[0], 1.25) && close_to(view.spacing[1], 1.25) &&
              close_to(view.spacing[2], 2.0),
          "atlas spacing 1.25/1.25/2.0");
    CHECK(close_to(view.origin[0], -66.875) && close_to(view.origin[1], 86.875) &&
              close_to(view.origin[2], -55.0),
          "atlas LPS origin (-66.875, 86.875, -55.0)");
    CHECK(close_to(view.direction[0], 1.0) && close_to(view.direction[4], -1.0) &&
              close_to(view.direction[8], 1.0) && close_to(view.direction[1], 0.0) &&
              close_to(view.direction[2], 0.0) && close_to(view.direction[3], 0.0) &&
              close_to(view.direction[5], 0.0) && close_to(view.direction[6], 0.0) &&
              close_to(view.direction[7], 0.0),
          "atlas direction diag(1, -1, 1)");
    printf("ok   atlas: dtype %d, dims %llux%llux%llu, spacing %g/%g/%g, origin (%g, %g, %g)\n",
           (int)view.voxel_type, (unsigned long long)view.dims[0], (unsigned long long)view.dims[1],
           (unsigned long long)view.dims[2], view.spacing[0], view.spacing[1], view.spacing[2],
           view.origin[0], view.origin[1], view.origin[2]);

    scratch_path(written, size, "atlas_copy.nii.gz");
    expect_ok(claim_image_write(img, written), "write atlas_copy.nii.gz");
    expect_same_file_contents(written, &view, "re-read atlas_copy.nii.gz");
    claim_image_free(img);
}

static void check_errors(const char *written)
{
    claim_image *img = NULL;
    claim_image *sentinel = (claim_image *)&failures; /* any non-NULL value */
    claim_image *out;
    claim_volume like = shaped(4, 4, 4);
    claim_volume view;
    char path[1024];

    expect_ok(claim_image_create(&like, CLAIM_VOXEL_U8, &img), "create a small image");

    /* NULL arguments */
    out = sentinel;
    expect_error(claim_image_read(NULL, &out), CLAIM_ERR_INVALID_ARGUMENT, "read(NULL path)");
    CHECK(out == NULL, "*out is NULL after a failed read");
    expect_error(claim_image_read("x.nii", NULL), CLAIM_ERR_INVALID_ARGUMENT, "read(NULL out)");
    expect_error(claim_image_write(NULL, "x.nii"), CLAIM_ERR_INVALID_ARGUMENT, "write(NULL img)");
    expect_error(claim_image_write(img, NULL), CLAIM_ERR_INVALID_ARGUMENT, "write(NULL path)");
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    expect_error(claim_image_view(NULL, &view), CLAIM_ERR_INVALID_ARGUMENT, "view(NULL img)");
    expect_error(claim_image_view(img, NULL), CLAIM_ERR_INVALID_ARGUMENT, "view(NULL out_view)");
    out = sentinel;
    expect_error(claim_image_create(NULL, CLAIM_VOXEL_U8, &out), CLAIM_ERR_INVALID_ARGUMENT,
                 "create(NULL like)");
    CHECK(out == NULL, "*out is NULL after a failed create");
    expect_error(claim_image_create(&like, CLAIM_VOXEL_U8, NULL), CLAIM_ERR_INVALID_ARGUMENT,
                 "create(NULL out)");

    /* The message survives the calls that return no status. */
    claim_image_free(NULL);
    (void)claim_status_str(CLAIM_ERR_IO);
    CHECK(strstr(claim_last_error_message(), "out") != NULL,
          "message kept across free/status_str");

    /* Missing, truncated and random files */
    scratch_path(path, sizeof path, "does-not-exist.nii.gz");
    out = sentinel;
    expect_error(claim_image_read(path, &out), CLAIM_ERR_IO, "read a missing file");
    CHECK(out == NULL, "*out is NULL after a missing file");
    CHECK(strstr(claim_last_error_message(), "does-not-exist.nii.gz") != NULL,
          "the message names the missing file");

    if (written[0] != '\0') {
        long size = file_size(written);
        long keep[3];
        int t;
        keep[0] = size / 2;
        keep[1] = 200;
        keep[2] = 10;
        for (t = 0; t < 3; t++) {
            char what[128];
            scratch_path(path, sizeof path, "truncated.nii.gz");
            CHECK(size > 400 && copy_prefix(written, path, keep[t]) == 0,
                  "made a truncated copy");
            snprintf(what, sizeof what, "read a .nii.gz cut to %ld of %ld bytes", keep[t], size);
            out = sentinel;
            expect_error(claim_image_read(path, &out), CLAIM_OK, what);
            CHECK(out == NULL, "*out is NULL after a truncated file");
        }
    } else {
        CHECK(0, "no written file to truncate (writing failed earlier)");
    }

    scratch_path(path, sizeof path, "random.nii.gz");
    write_random_bytes(path, 4096, 42u);
    out = sentinel;
    expect_error(claim_image_read(path, &out), CLAIM_OK, "read random bytes (.nii.gz)");
    CHECK(out == NULL, "*out is NULL after random bytes");
    scratch_path(path, sizeof path, "random.nii");
    write_random_bytes(path, 600, 7u);
    out = sentinel;
    expect_error(claim_image_read(path, &out), CLAIM_OK, "read random bytes (.nii)");
    CHECK(out == NULL, "*out is NULL after random bytes");

    /* Bad volume descriptions */
    {
        claim_volume bad = shaped(4, 4, 4);
        bad.struct_size = 0;
        out = sentinel;
        expect_error(claim_image_create(&bad, CLAIM_VOXEL_U8, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with struct_size 0");
        CHECK(out == NULL, "*out is NULL after struct_size 0");
        CHECK(strstr(claim_last_error_message(), "struct_size") != NULL,
              "the message names struct_size");

        memset(&view, 0, sizeof view);
        expect_error(claim_image_view(img, &view), CLAIM_ERR_INVALID_ARGUMENT,
                     "view with struct_size 0");
        CHECK(view.data == NULL && view.dims[0] == 0, "a refused view is left untouched");

        bad = shaped(4, 4, 4);
        bad.dims[0] = bad.dims[1] = bad.dims[2] = (uint64_t)1 << 40;
        out = sentinel;
        expect_error(claim_image_create(&bad, CLAIM_VOXEL_F32, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with dims 2^40 x 2^40 x 2^40");
        CHECK(out == NULL, "*out is NULL after overflowing dims");

        bad = shaped(4, 4, 4);
        bad.dims[1] = 0;
        expect_error(claim_image_create(&bad, CLAIM_VOXEL_F32, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with a zero dim");

        bad = shaped(4, 4, 4);
        bad.spacing[1] = NAN;
        out = sentinel;
        expect_error(claim_image_create(&bad, CLAIM_VOXEL_F32, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with NaN spacing");
        CHECK(out == NULL, "*out is NULL after NaN spacing");
        CHECK(strstr(claim_last_error_message(), "spacing[1]") != NULL,
              "the message names spacing[1]");

        bad = shaped(4, 4, 4);
        bad.direction[0] = 2.0;
        expect_error(claim_image_create(&bad, CLAIM_VOXEL_F32, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with a non-orthonormal direction");

        bad = shaped(4, 4, 4);
        bad.origin[2] = INFINITY;
        expect_error(claim_image_create(&bad, CLAIM_VOXEL_F32, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with an infinite origin");

        expect_error(claim_image_create(&like, 99, &out), CLAIM_ERR_INVALID_ARGUMENT,
                     "create with dtype 99");
    }

    /* Success clears the message. */
    out = NULL;
    expect_ok(claim_image_create(&like, CLAIM_VOXEL_I16, &out), "create after failures");
    claim_image_free(out);
    claim_image_free(img);
}

int main(int argc, char **argv)
{
    char written[1024];
    char atlas_written[1024];

    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    scratch_dir = argv[1];
    written[0] = '\0';
    atlas_written[0] = '\0';

    check_versions_and_names();
    check_create_write_read(written, sizeof written);
    check_atlas(atlas_written, sizeof atlas_written);
    /* Truncate the larger file when the atlas was written. */
    check_errors(atlas_written[0] != '\0' ? atlas_written : written);

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
