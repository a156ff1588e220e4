/* A stand-in for libcudart on a host without a GPU: "device" memory is host memory (malloc), the
   copies are real memcpy, streams are no-ops, events read CLOCK_MONOTONIC, and the one GPU is
   "Stand-in GPU" (compute capability 8.7). Only the calls evitdeploy's TensorRT device module
   makes; each returns 0 (cudaSuccess). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cudaMalloc(void **ptr, size_t size) { *ptr = malloc(size); return *ptr ? 0 : 2; }
int cudaFree(void *ptr) { free(ptr); return 0; }
int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream) { memcpy(dst, src, count); return 0; }
int cudaStreamCreate(void **stream) { *stream = malloc(1); return 0; }
int cudaStreamSynchronize(void *stream) { return 0; }
int cudaStreamDestroy(void *stream) { free(stream); return 0; }
int cudaEventCreate(void **event) { *event = calloc(1, sizeof(double)); return 0; }
int cudaEventRecord(void *event, void *stream) {
  struct timespec now; clock_gettime(CLOCK_MONOTONIC, &now);
  *(double *)event = now.tv_sec * 1e3 + now.tv_nsec / 1e6; return 0;
}
int cudaEventSynchronize(void *event) { return 0; }
int cudaEventDestroy(void *event) { free(event); return 0; }
int cudaEventElapsedTime(float *ms, void *start, void *end) { *ms = (float)(*(double *)end - *(double *)start); return 0; }
int cudaGetDevice(int *device) { *device = 0; return 0; }
int cudaGetDeviceProperties(char *prop, int device) { strcpy(prop, "Stand-in GPU"); return 0; }
int cudaDeviceGetAttribute(int *value, int attr, int device) { *value = attr == 75 ? 8 : 7; return 0; }
const char *cudaGetErrorString(int code) { return code ? "out of memory" : "no error"; }
