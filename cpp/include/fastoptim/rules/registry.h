// The one registry of rules: each rule's header, and the list of element-wise rules as X(Type,
// name), which drives the kernel tables, the op registrations, the metadata, the libtorch and edge
// classes and the tests, so no driver or front end names a rule by hand. Adding a rule: its
// header, its include here, its entry in the list.
// FASTOPTIM_OPTIMIZER_RULES are the optimizers (their first field is lr; each front end has a
// class for each); FASTOPTIM_HELPER_RULES are steps the front ends compose into others (weight
// averaging for the wrappers, Scout's statistics, the Hessian EMA's refresh, Muon's two element-wise
// halves around its orthogonalisation, Adafactor's vector step beside its factored one).
#pragma once
#include "fastoptim/rules/adabelief.h"
#include "fastoptim/rules/adafactor.h"
#include "fastoptim/rules/adadelta.h"
#include "fastoptim/rules/adagrad.h"
#include "fastoptim/rules/adahessian.h"
#include "fastoptim/rules/adam.h"
#include "fastoptim/rules/adamp.h"
#include "fastoptim/rules/adopt.h"
#include "fastoptim/rules/adan.h"
#include "fastoptim/rules/ademamix.h"
#include "fastoptim/rules/adamax.h"
#include "fastoptim/rules/asgd.h"
#include "fastoptim/rules/amac.h"
#include "fastoptim/rules/average.h"
#include "fastoptim/rules/hessian_ema.h"
#include "fastoptim/rules/lamb.h"
#include "fastoptim/rules/lars.h"
#include "fastoptim/rules/lion.h"
#include "fastoptim/rules/muon.h"
#include "fastoptim/rules/nadam.h"
#include "fastoptim/rules/radam.h"
#include "fastoptim/rules/rmsprop.h"
#include "fastoptim/rules/rprop.h"
#include "fastoptim/rules/schedule_free.h"
#include "fastoptim/rules/scout_track.h"
#include "fastoptim/rules/sgd.h"
#include "fastoptim/rules/sophia.h"
#include "fastoptim/rules/tadam.h"

#define FASTOPTIM_OPTIMIZER_RULES(X) X(SGD, sgd) X(Adagrad, adagrad) X(RMSprop, rmsprop) X(Adam, adam) X(AdaBelief, adabelief) X(AdEMAMix, ademamix) X(Adan, adan) X(LAMB, lamb) X(LARS, lars) X(TAdam, tadam) X(AdamP, adamp) X(AMaC, amac) X(Sophia, sophia) X(AdaHessian, adahessian) X(Lion, lion) \
  X(NAdam, nadam) X(RAdam, radam) X(Adamax, adamax) X(Adadelta, adadelta) X(ASGD, asgd) X(Rprop, rprop) X(ADOPT, adopt) \
  X(AdamWScheduleFree, adamw_schedulefree) X(SGDScheduleFree, sgd_schedulefree)
#define FASTOPTIM_HELPER_RULES(X) X(HessianEMA, hessian_ema) X(Average, average) X(ScoutTrack, scout_track) X(Muon, muon) \
  X(MuonUpdate, muon_update) X(Adafactor, adafactor)
#define FASTOPTIM_ELEMENTWISE_RULES(X) FASTOPTIM_OPTIMIZER_RULES(X) FASTOPTIM_HELPER_RULES(X)
