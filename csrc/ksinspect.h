/* ksinspect.h - the whole public C API of the ksinspect core. */
#ifndef KSINSPECT_H
#define KSINSPECT_H

#include "ksi_common.h"
#include "ksi_segment.h"
#include "ksi_paging.h"
#include "ksi_debugreg.h"
#include "ksi_live.h"
#include "ksi_walk.h"
#include "ksi_scan.h"
#include "ksi_fields.h"
#include "ksi_control.h"
#include "ksi_cpu_probe.h"
#include "ksi_kdump.h"
#include "ksi_pagecache.h"

#endif
