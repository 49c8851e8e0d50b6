"""Offline trainer of fillcls_ros: data, the six training strategies of Modas et al. (ICIP 2021),
source models, sweeps and reports. Run ``python -m training --help``."""
