// The list of element-wise rules as X(Type, name): drives the kernel tables, the op
// registrations and the metadata, so no driver or front end names a rule by hand.
#pragma once
#define FASTOPTIM_ELEMENTWISE_RULES(X) X(SGD, sgd) X(Adagrad, adagrad) X(RMSprop, rmsprop) X(Adam, adam) X(AdaBelief, adabelief) X(AdEMAMix, ademamix) X(Adan, adan) X(LAMB, lamb) X(LARS, lars) X(TAdam, tadam) X(AdamP, adamp) X(AMaC, amac) X(Sophia, sophia) X(AdaHessian, adahessian) X(HessianEMA, hessian_ema) X(Average, average) X(ScoutTrack, scout_track)
