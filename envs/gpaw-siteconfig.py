# GPAW build configuration (siteconfig) for matdisco: serial GPAW with libxc, OpenBLAS, FFTW.
# Used as GPAW_CONFIG=envs/gpaw-siteconfig.py when pip builds gpaw from the PyPI sdist.
# Needs the Debian packages libxc-dev libopenblas-dev libfftw3-dev (and g++).
# mpi = False: otherwise setup.py switches MPI on whenever mpic++ is on PATH and fails
# without libopenmpi-dev. Do not set GPAW_BUILD_JOBS (its Makefile build uses gcc for C++).
# The names below (libraries, ...) are provided by GPAW's setup.py when it execs this file.
mpi = False
compiler = "g++"
libraries += ["xc", "blas", "fftw3"]  # noqa: F821
fftw = True
