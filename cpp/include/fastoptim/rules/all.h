// Every element-wise rule. Adding a rule: write its header, include it here, add it to the list.
#pragma once
#include "fastoptim/rules/adagrad.h"
#include "fastoptim/rules/adam.h"
#include "fastoptim/rules/list.h"
#include "fastoptim/rules/rmsprop.h"
#include "fastoptim/rules/sgd.h"
