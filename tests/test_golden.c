#include "testing.h"
int main(void){return lb_test_summary();}
