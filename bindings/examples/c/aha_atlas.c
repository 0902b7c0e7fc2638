/* Parcellates the AHA-17 atlas with claim and says how well the result
 * agrees with the atlas's own segments; writes the segment map.
 *
 *   aha_atlas AHA17_model_ED.nii.gz segments.nii.gz
 *
 * The atlas labels segments 1-17 on the myocardium, 21 on the LV blood pool
 * and 24 on the RV; claim wants one myocardium label, so the map is
 * relabelled first (1-17 -> 2, 21 -> 1, 24 -> 5, with RV = 5). */
#include <stdio.h>
#include <stdlib.h>

#include "claim.h"

/* The label at voxel n, whatever the file's voxel type. */
static int label_at(const claim_volume *v, size_t n)
{
    switch (v->voxel_type) {
    case CLAIM_VOXEL_U8: return ((const uint8_t *)v->data)[n];
    case CLAIM_VOXEL_I16: return ((const int16_t *)v->data)[n];
    case CLAIM_VOXEL_U16: return ((const uint16_t *)v->data)[n];
    case CLAIM_VOXEL_I32: return (int)((const int32_t *)v->data)[n];
    default: return (int)((const float *)v->data)[n];
    }
}

static int fail(const char *what, claim_status status)
{
    fprintf(stderr, "%s: %s: %s\n", what, claim_status_str(status), claim_last_error_message());
    return 1;
}

int main(int argc, char **argv)
{
    claim_image *atlas = NULL, *segments = NULL;
    claim_volume view = {0}, labels, out = {0};
    claim_label_scheme scheme;
    claim_aha_params params;
    claim_status status;
    size_t n, count, myocardium = 0, agree = 0;
    unsigned char *relabelled = NULL;
    int code = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: %s ATLAS.nii.gz SEGMENTS.nii.gz\n", argv[0]);
        return 2;
    }
    if ((claim_abi_version() >> 16) != CLAIM_ABI_VERSION_MAJOR) {
        fprintf(stderr, "libclaim %s does not match claim.h\n", claim_version_string());
        return 1;
    }
    /* readme:begin */
    if ((status = claim_image_read(argv[1], &atlas)) != CLAIM_OK) return fail("read", status);
    view.struct_size = sizeof view;
    if ((status = claim_image_view(atlas, &view)) != CLAIM_OK) {
        fail("view", status);
        goto done;
    }
    count = (size_t)(view.dims[0] * view.dims[1] * view.dims[2]);
    relabelled = (unsigned char *)malloc(count);
    if (relabelled == NULL) goto done;
    for (n = 0; n < count; ++n) {
        int v = label_at(&view, n);
        relabelled[n] = v >= 1 && v <= 17 ? 2 : v == 21 ? 1 : v == 24 ? 5 : 0;
    }
    labels = view; /* the atlas's geometry */
    labels.voxel_type = CLAIM_VOXEL_U8;
    labels.data = relabelled;

    CLAIM_DEFAULT(claim_label_scheme, &scheme);
    scheme.rv = 5;
    CLAIM_DEFAULT(claim_aha_params, &params);
    params.labels = &scheme;
    /* The output image takes the labels' dims and geometry. */
    if ((status = claim_image_create(&labels, CLAIM_VOXEL_U8, &segments)) != CLAIM_OK) {
        fail("create", status);
        goto done;
    }
    out.struct_size = sizeof out;
    if ((status = claim_image_view(segments, &out)) != CLAIM_OK ||
        (status = claim_aha_parcellate(&labels, &params, &out)) != CLAIM_OK) {
        fail("parcellate", status);
        goto done;
    }
    for (n = 0; n < count; ++n) {
        int v = label_at(&view, n);
        if (v >= 1 && v <= 17) {
            ++myocardium;
            agree += ((const unsigned char *)out.data)[n] == v;
        }
    }
    if ((status = claim_image_write(segments, argv[2])) != CLAIM_OK) {
        fail("write", status);
        goto done;
    }
    /* readme:end */
    printf("claim %s: %zu myocardium voxels, %.1f %% in the atlas's segment\n",
           claim_version_string(), myocardium, 100.0 * (double)agree / (double)myocardium);
    code = myocardium > 0 && 10 * agree > 8 * myocardium ? 0 : 1;
done:
    claim_image_free(segments);
    claim_image_free(atlas);
    free(relabelled);
    return code;
}
