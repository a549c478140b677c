#include <iostream>
int main() { std::cout << "moeprep\n"; return 0; }
