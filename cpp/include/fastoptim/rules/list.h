// The list of element-wise rules as X(Type, name): drives the kernel tables, the op
// registrations and the metadata, so no driver or front end names a rule by hand.
// FASTOPTIM_OPTIMIZER_RULES are the optimizers (their first field is lr; each front end has a
// class for each); FASTOPTIM_HELPER_RULES are steps the front ends compose into others (weight
// averaging for the wrappers, Scout's statistics, the Hessian EMA's refresh).
#pragma once
#define FASTOPTIM_OPTIMIZER_RULES(X) X(SGD, sgd) X(Adagrad, adagrad) X(RMSprop, rmsprop) X(Adam, adam) X(AdaBelief, adabelief) X(AdEMAMix, ademamix) X(Adan, adan) X(LAMB, lamb) X(LARS, lars) X(TAdam, tadam) X(AdamP, adamp) X(AMaC, amac) X(Sophia, sophia) X(AdaHessian, adahessian)
#define FASTOPTIM_HELPER_RULES(X) X(HessianEMA, hessian_ema) X(Average, average) X(ScoutTrack, scout_track)
#define FASTOPTIM_ELEMENTWISE_RULES(X) FASTOPTIM_OPTIMIZER_RULES(X) FASTOPTIM_HELPER_RULES(X)
