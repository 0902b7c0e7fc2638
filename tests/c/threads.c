/*
 * claim_last_error_message() is per thread: two threads fail in different
 * ways over and over (interleaved with successes) and each must always see
 * its own message. Usage: threads <scratch-dir>. Exits 0 when all passed.
 */
#define _POSIX_C_SOURCE 200809L
#include "claim.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { ROUNDS = 2000 };

struct worker {
    int id;
    char missing_path[1024];
    int wrong; /* rounds where the thread saw a message that was not its own */
};

static claim_volume small_volume(void)
{
    claim_volume v;
    memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.voxel_type = CLAIM_VOXEL_U8;
    v.dims[0] = v.dims[1] = v.dims[2] = 3;
    v.spacing[0] = v.spacing[1] = v.spacing[2] = 1.0;
    v.direction[0] = v.direction[4] = v.direction[8] = 1.0;
    return v;
}

static void *run(void *arg)
{
    struct worker *w = (struct worker *)arg;
    claim_volume good = small_volume();
    claim_volume nan_spacing = small_volume();
    int round;
    nan_spacing.spacing[1] = NAN;

    for (round = 0; round < ROUNDS; round++) {
        claim_image *img = NULL;
        claim_status status;
        const char *message;
        const char *own;
        const char *other;

        if (w->id == 0) {
            status = claim_image_read(w->missing_path, &img);
            own = "thread-a-missing.nii";
            other = "spacing[1]";
        } else {
            status = claim_image_create(&nan_spacing, CLAIM_VOXEL_F32, &img);
            own = "spacing[1]";
            other = "thread-a-missing.nii";
        }
        message = claim_last_error_message();
        if (status == CLAIM_OK || img != NULL || strstr(message, own) == NULL ||
            strstr(message, other) != NULL) {
            if (w->wrong++ == 0) {
                fprintf(stderr, "thread %d round %d: status %s, message \"%s\"\n", w->id, round,
                        claim_status_str(status), message);
            }
        }

        /* A success on this thread clears only this thread's message. */
        if (round % 7 == 0) {
            status = claim_image_create(&good, CLAIM_VOXEL_U8, &img);
            if (status != CLAIM_OK || claim_last_error_message()[0] != '\0') {
                if (w->wrong++ == 0) {
                    fprintf(stderr, "thread %d round %d: success left \"%s\"\n", w->id, round,
                            claim_last_error_message());
                }
            }
            claim_image_free(img);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct worker workers[2];
    pthread_t threads[2];
    int t, wrong = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    for (t = 0; t < 2; t++) {
        workers[t].id = t;
        workers[t].wrong = 0;
        snprintf(workers[t].missing_path, sizeof workers[t].missing_path,
                 "%s/thread-a-missing.nii", argv[1]);
        if (pthread_create(&threads[t], NULL, run, &workers[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    }
    for (t = 0; t < 2; t++) {
        pthread_join(threads[t], NULL);
        wrong += workers[t].wrong;
    }
    /* The main thread made no call: its message is still empty. */
    if (claim_last_error_message()[0] != '\0') {
        fprintf(stderr, "main thread sees \"%s\"\n", claim_last_error_message());
        wrong++;
    }
    printf("%d rounds on 2 threads, %d wrong messages\n", ROUNDS, wrong);
    return wrong == 0 ? 0 : 1;
}
