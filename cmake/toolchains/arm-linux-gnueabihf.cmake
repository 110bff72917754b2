# armhf (32-bit ARMv7, hard float) with Debian's arm-linux-gnueabihf cross
# toolchain; tests run under qemu-arm-static. See debian-cross.cmake.
set(IC_CROSS_TRIPLET arm-linux-gnueabihf)
set(IC_CROSS_PROCESSOR arm)
set(IC_CROSS_QEMU qemu-arm-static)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
