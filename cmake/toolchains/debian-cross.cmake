# Shared part of the cross toolchain files beside it: Debian's crossbuild-essential-<arch>
# compilers, the target's libraries from its multiarch -dev packages (libfmt-dev:<arch>, ...), and
# qemu-user to run what is built. The including file sets MQTTBROKER_CROSS_PROCESSOR,
# MQTTBROKER_CROSS_TRIPLE (the compilers' prefix), MQTTBROKER_CROSS_MULTIARCH (the library
# directory) and MQTTBROKER_CROSS_EMULATOR (empty where the build machine runs the code itself).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${MQTTBROKER_CROSS_PROCESSOR})
set(CMAKE_C_COMPILER ${MQTTBROKER_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MQTTBROKER_CROSS_TRIPLE}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${MQTTBROKER_CROSS_MULTIARCH})
# Programs (python3, openssl) are the build machine's; libraries never are: an x86-64 OpenSSL
# found for an ARM link would fail late, or worse, be taken for the target's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
list(APPEND CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib32 /usr/libx32)
# The multiarch packages (libc6:<arch>, which libfmt-dev:<arch> brings) are the target's root, so
# qemu runs without -L. (-L /usr/<triple> would pair the cross toolchain's ld.so with the multiarch
# libc, whose versions differ: threads then crash.)
if(MQTTBROKER_CROSS_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${MQTTBROKER_CROSS_EMULATOR})
endif()
