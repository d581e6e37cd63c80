# Cross build for big-endian 64-bit (s390x), the byte-order check:
#   cmake -S . -B build/cross-s390x -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/s390x.cmake
# needs crossbuild-essential-s390x and libfmt-dev:s390x (scripts/install-deps.sh --cross).
set(MQTTBROKER_CROSS_PROCESSOR s390x)
set(MQTTBROKER_CROSS_TRIPLE s390x-linux-gnu)
set(MQTTBROKER_CROSS_MULTIARCH s390x-linux-gnu)
set(MQTTBROKER_CROSS_EMULATOR "qemu-s390x")
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
