"""Pure functions on pixels and planes: codec, colour, planes, resamplers, MATLAB resize,
quality measures, border extension, the gain estimate. No state, no threads, no HTTP."""
