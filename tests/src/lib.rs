//! End-to-end tests of the wattest binaries; see tests/tests/.
