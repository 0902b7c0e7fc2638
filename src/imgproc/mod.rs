//! Image processing on volumes: distance maps, morphology, components, smoothing.
