/*
 * A synthetic left ventricle for the SMILE harnesses (C99 and C++17): a
 * half-prolate-spheroid shell of myocardium around an LV cavity, open at
 * the base, closed by an apex cap, with an RV blood pool against the
 * septum. It lets the harnesses run every SMILE call without the atlas.
 *
 * Grid: SYNTHETIC_LV_NI x NJ x NK voxels of 2 x 2 x 4 mm, identity
 * direction, k along the long axis (apex at low k, base at high k), RV on
 * the patient's right-anterior side (-x, -y in LPS), as in most scans.
 */
#ifndef CLAIM_TESTS_SYNTHETIC_LV_H
#define CLAIM_TESTS_SYNTHETIC_LV_H

#include "claim.h"

#include <stdint.h>
#include <string.h>

#define SYNTHETIC_LV_NI 48
#define SYNTHETIC_LV_NJ 48
#define SYNTHETIC_LV_NK 24
#define SYNTHETIC_LV_VOXELS (SYNTHETIC_LV_NI * SYNTHETIC_LV_NJ * SYNTHETIC_LV_NK)

/* The geometry of the synthetic grid, with `dtype` and `data`. */
static claim_volume synthetic_lv_volume(claim_voxel_type dtype, void *data)
{
    claim_volume v;
    memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.voxel_type = dtype;
    v.dims[0] = SYNTHETIC_LV_NI;
    v.dims[1] = SYNTHETIC_LV_NJ;
    v.dims[2] = SYNTHETIC_LV_NK;
    v.spacing[0] = 2.0;
    v.spacing[1] = 2.0;
    v.spacing[2] = 4.0;
    v.origin[0] = -47.0;
    v.origin[1] = -47.0;
    v.origin[2] = 0.0;
    v.direction[0] = v.direction[4] = v.direction[8] = 1.0;
    v.data = data;
    return v;
}

/* Writes the labels of the synthetic heart in `scheme` (its rv label is
 * used when it is not -1) into `out`, SYNTHETIC_LV_VOXELS bytes, i fastest. */
static void synthetic_lv_labels(const claim_label_scheme *scheme, uint8_t *out)
{
    const double base_z = 84.0;              /* mm; open above */
    const double inner_r = 20.0, inner_h = 64.0; /* cavity semi-axes, mm */
    const double outer_r = 28.0, outer_h = 72.0; /* epicardium semi-axes, mm */
    int i, j, k;
    for (k = 0; k < SYNTHETIC_LV_NK; k++) {
        for (j = 0; j < SYNTHETIC_LV_NJ; j++) {
            for (i = 0; i < SYNTHETIC_LV_NI; i++) {
                const double x = -47.0 + 2.0 * i, y = -47.0 + 2.0 * j, z = 4.0 * k;
                const double dz_in = (z - base_z) / inner_h, dz_out = (z - base_z) / outer_h;
                const double q_in = (x * x + y * y) / (inner_r * inner_r) + dz_in * dz_in;
                const double q_out = (x * x + y * y) / (outer_r * outer_r) + dz_out * dz_out;
                const double rx = (x + 26.0) / 22.0, ry = (y + 6.0) / 20.0;
                uint8_t label = 0;
                if (z <= base_z && q_in < 1.0) {
                    label = (uint8_t)scheme->lv_cavity;
                } else if (z <= base_z && q_out < 1.0) {
                    label = (uint8_t)scheme->myocardium;
                } else if (scheme->rv != -1 && z >= 36.0 && z <= base_z &&
                           rx * rx + ry * ry < 1.0) {
                    label = (uint8_t)scheme->rv;
                }
                out[i + SYNTHETIC_LV_NI * (j + SYNTHETIC_LV_NJ * k)] = label;
            }
        }
    }
}

#endif /* CLAIM_TESTS_SYNTHETIC_LV_H */
