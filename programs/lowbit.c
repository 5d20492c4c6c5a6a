#include "lowbit.h"
int main(void){return 0;}
